"""Named sources: `quarry sources` through a real server that runs their schedule, the
API's guard on the folders it may read, the UI's Sources page, and the same verbs here
when no server runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app.cli import app

from ..servers import Process, quarry_env


def _cli(env: dict[str, str], *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    out = result.stdout
    return result.exit_code, json.loads(out) if out.strip().startswith(("{", "[")) else (
        out + result.stderr
    )


def _names(url: str) -> set[str]:
    page = httpx.get(f"{url}/v1/documents", params={"limit": 100}, timeout=30).json()
    return {doc["source"] for doc in page["documents"]}


@pytest.fixture()
def notes(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "owls.md").write_text("Owls hunt mice at night using silent flight.")
    (folder / "tea.txt").write_text("Green tea leaves are steamed or pan-fired after picking.")
    return folder


def test_a_scheduled_source_is_synced_by_the_server_and_shown_everywhere(
    notes: Path,
    tmp_path: Path,
    minilm_path: str,
    redis_process: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streamlit as st

    from ..ui.test_pages import page, texts

    env = quarry_env(
        tmp_path / "data", minilm_path, redis_process.url, QUARRY_SYNC_ROOTS=str(notes)
    )
    server = Process("serve", env, tmp_path / "server.log")
    server.start()
    api = ["--api", server.url]
    try:
        outside = httpx.post(
            f"{server.url}/v1/sources",
            json={"name": "etc", "folder": "/etc"},
            timeout=30,
        )
        assert outside.status_code == 422 and "QUARRY_SYNC_ROOTS" in outside.text
        assert outside.json()["error"]["detail"]["field"] == "folder"
        for body, field in (  # nor any bucket its credentials reach, nor any endpoint
            ({"name": "b", "s3": "s3://payroll/2026"}, "s3"),
            ({"name": "b", "s3": "s3://payroll", "endpoint": "http://169.254.169.254"}, "endpoint"),
        ):
            refused = httpx.post(f"{server.url}/v1/sources", json=body, timeout=30)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["detail"]["field"] == field

        code, added = _cli(
            env, "sources", "add", "notes", "--folder", str(notes), "--every", "10s",
            "--json", *api,
        )  # fmt: skip
        assert code == 0 and added["every_s"] == 10, added
        deadline = time.monotonic() + 120  # its first run is due at once: the schedule's
        while _names(server.url) != {"owls.md", "tea.txt"}:
            assert time.monotonic() < deadline, "the schedule did not sync the source"
            time.sleep(0.5)

        (notes / "tea.txt").unlink()
        (notes / "bread.txt").write_text("Sourdough rises slowly with wild yeast.")
        deadline = time.monotonic() + 120  # the next scheduled run, 10 s after the last
        while _names(server.url) != {"owls.md", "bread.txt"}:
            assert time.monotonic() < deadline, "the schedule did not follow the change"
            time.sleep(0.5)
        code, done = _cli(env, "sources", "sync", "notes", "--json", *api)
        assert code == 0 and done["last_error"] is None, done
        report = done["last_report"]  # a run now: nothing left to do, nothing read
        assert report["unchanged"] == 2 and report["fetched"] == 0 and report["deleted"] == []

        code, listed = _cli(env, "sources", "list", "--json", *api)
        assert [s["name"] for s in listed] == ["notes"] and listed[0]["last_finished"]

        monkeypatch.setenv("QUARRY_API_URL", server.url)
        st.cache_resource.clear()
        shown = page("sources")
        assert "notes" in texts(shown) and "every 10 s" in texts(shown)
        assert [b.label for b in shown.button] == ["Sync now"]
        shown.button[0].click().run()
        assert not shown.exception

        code, _ = _cli(env, "sources", "remove", "notes", *api)
        assert code == 0 and httpx.get(f"{server.url}/v1/sources").json()["sources"] == []
        assert _names(server.url) == {"owls.md", "bread.txt"}  # its documents stay
    finally:
        server.stop()


def test_sources_work_here_when_no_server_runs(
    notes: Path, tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    env = quarry_env(tmp_path / "data", minilm_path, redis_process.url)
    code, added = _cli(env, "sources", "add", "notes", "--folder", str(notes), "--json")
    assert code == 0 and added["location"] == str(notes.resolve())
    code, again = _cli(env, "sources", "add", "notes", "--folder", str(notes))
    assert code == 1 and "exists already" in again
    code, wrong = _cli(env, "sources", "add", "x", "--folder", str(notes), "--every", "soon")
    assert code == 1 and "every" in wrong
    code, done = _cli(env, "sources", "sync", "notes", "--json")
    assert code == 0 and done["last_report"]["ingest"]["ingested"] == 2, done
    code, done = _cli(env, "sources", "sync", "notes", "--json")
    assert done["last_report"]["unchanged"] == 2 and done["last_report"]["fetched"] == 0
    code, missing = _cli(env, "sources", "sync", "nope")
    assert code == 1 and "no source 'nope'" in missing
