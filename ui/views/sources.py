"""Sources: the folders and buckets collections follow, their last sync, and "Sync now"."""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import streamlit as st

from ui.common import api, call, page_header, when


def outcome(source: dict[str, Any]) -> str:
    if source.get("running"):
        now = source.get("progress") or {}
        if now.get("stage") == "ingesting":
            return f"running: ingesting {now['to_ingest']} of {now['listed']} files…"
        if now.get("stage"):
            return f"running: {now['stage']} ({now['listed']} files listed)…"
        return "running…"
    report, error = source.get("last_report"), source.get("last_error")
    said = ""
    if report:
        done = report["ingest"]
        said = (
            f"{report['listed']} files · {done['ingested']} ingested · "
            f"{report['unchanged']} unchanged · {len(report['deleted'])} deleted · "
            f"{len(done['errors'])} failed"
        )
    if error:
        return f"{said + ' · ' if said else ''}{error['message']} ({error['code']})"
    return said or "never synced"


page_header("Sources", "Folders and buckets the collections follow, kept in sync.")
listed = call(lambda: api().sources(), "list the sources")
if listed is not None:
    sources = listed["sources"]
    if not sources:
        st.info(
            "No sources yet. Add one with `quarry sources add NAME --folder PATH "
            "[--every 15m]` or `--s3 s3://BUCKET/PREFIX`, or POST /v1/sources."
        )
    for source in sources:
        with st.container(border=True):
            left, right = st.columns([4, 1])
            every = f"every {source['every_s']} s" if source["every_s"] else "when asked"
            left.markdown(f"**{source['name']}** → `{source['collection']}` · {every}")
            where = re.sub(r"([\\`*_\[\]<>#|~$])", r"\\\1", source["location"])  # as written
            left.caption(f"{where} · last sync: {when(source['last_finished'])}")
            shown = outcome(source)
            if source.get("last_error"):
                left.warning(shown)
            else:
                left.caption(shown)
            name = source["name"]
            if right.button("Sync now", key=f"sync-{name}"):
                started = call(partial(api().sync_source, name), "start the sync")
                if started is not None:
                    st.toast(f"{name}: syncing")
