"""Status: readiness of model, store and cache; collections; cache hit rate; recent jobs."""

from __future__ import annotations

from functools import partial

import streamlit as st

from ui.common import api, call, page_header, when

BADGE = {"ready": ":green[ready]", "degraded": ":orange[degraded]", "not_ready": ":red[not ready]"}

page_header("Status", "Is everything up, and what does Quarry hold?")
readiness = call(lambda: api().readiness(), "read the service status")
if readiness is not None:
    st.markdown(f"**Service:** {BADGE.get(readiness['status'], readiness['status'])}")
    columns = st.columns(3)
    for column, name in zip(columns, ("model", "store", "cache"), strict=True):
        check = readiness["checks"].get(name, {})
        with column.container(border=True):
            mark = ":material/check_circle:" if check.get("ok") else ":material/error:"
            st.markdown(f"{mark} **{name.capitalize()}**")
            detail = (
                check.get("reason")
                or check.get("model")
                or (
                    f"{check['collections']} collections" if "collections" in check else "reachable"
                )
            )
            st.caption(str(detail))
    model_check = readiness["checks"].get("model", {})
    if model_check.get("warning"):
        st.warning(f"**Embedding model: {model_check['model']}.** {model_check['warning']}")
    elif model_check.get("model"):
        st.caption(f"Embedding model: {model_check['model']} ({model_check.get('chosen', '')})")
    for offer in readiness["checks"].get("migrations", {}).get("offer", []):
        name = offer["collection"]
        st.info(
            f"**{name}** was built with the fallback model {offer['built_with']}; "
            f"{offer['available']} is available now. Moving it re-embeds every document "
            f"beside the live one, then swaps at once (`{offer['command']}`)."
        )
        if st.button(f"Move {name} to {offer['available']}", key=f"migrate-{name}"):
            spec: dict[str, object] = {"model": offer["model"]}
            started = call(partial(api().migrate, name, spec), f"move {name}")
            if started is not None:
                st.success(
                    f"{name}: moving to {offer['available']} ({started['stage']}); follow it "
                    f"with `quarry migrate {name} --status`"
                )
    parsers = readiness["checks"].get("parsers", {})
    if parsers.get("reason"):
        st.warning(f"**Formats:** {parsers['reason']} (see scripts/system-packages.sh)")
    servers = model_check.get("servers")
    if servers:
        st.subheader("Embedding servers")
        st.dataframe(
            [
                {
                    "server": server["url"],
                    "state": server["state"],
                    "in flight": server["in_flight"],
                    "why": server["reason"] or "",
                }
                for server in servers
            ],
            hide_index=True,
            width="stretch",
        )

stats = call(lambda: api().stats(), "read the statistics")
if stats is not None:
    cache, model, jobs = stats["cache"], stats["model"] or {}, stats["jobs"]
    a, b, c, d = st.columns(4)
    rate = cache["hit_rate"]
    a.metric("Cache hit rate", f"{rate:.0%}" if rate is not None else "n/a")
    b.metric("Texts embedded", f"{model.get('texts', 0):,}")
    c.metric("Jobs running or queued", jobs["queued_or_running"])
    d.metric("Jobs finished", sum(jobs["finished"].values()))

collections = call(lambda: api().collections(), "list the collections")
if collections is not None:
    st.subheader("Collections")
    rows = [
        {
            "collection": c["name"] + (" (default)" if c["name"] == collections["default"] else ""),
            "documents": c["documents"],
            "chunks": c["chunks"],
            "model": (c["recipe"] or {}).get("model", ""),
            "dimension": (c["recipe"] or {}).get("dimension", ""),
        }
        for c in collections["collections"]
    ]
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
    else:
        st.info("No collections yet.")

recent = call(lambda: api().jobs(10), "list recent jobs")
if recent is not None:
    st.subheader("Recent jobs")
    if recent:
        st.dataframe(
            [
                {
                    "job": j["job_id"][:8],
                    "state": j["state"],
                    "files": j["progress"]["files"],
                    "chunks": j["progress"]["stored"],
                    "created": when(j["created_at"]),
                    "took (s)": j["progress"]["elapsed_s"],
                }
                for j in recent
            ],
            hide_index=True,
            width="stretch",
        )
    else:
        st.info("No jobs yet.")
