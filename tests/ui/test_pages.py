"""Each UI page through `streamlit.testing` AppTest, against a real running API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from ..ingest.documents import write_document
from .conftest import PAGES

OWLS = "Owls hunt mice at night using silent flight and sharp hearing."
COFFEE = "Espresso is brewed by forcing hot water through finely ground coffee."


def page(name: str) -> AppTest:
    app = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=60)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def nodes(node: Any, kind: str) -> list[Any]:
    found = [node] if getattr(node, "type", None) == kind else []
    for child in getattr(node, "children", {}).values():
        found += nodes(child, kind)
    return found


def texts(app: AppTest) -> str:
    parts = [m.value for m in app.markdown] + [c.value for c in app.caption]
    parts += [w.value for w in app.warning]
    parts += [str(getattr(h, "proto", "")) for h in nodes(app._tree, "html")]
    parts += [str(getattr(p, "proto", "")) for p in nodes(app._tree, "progress")]
    return "\n".join(parts)


def wait_jobs_done(api_url: str) -> None:
    deadline = time.monotonic() + 180
    while any(
        j["state"] in ("queued", "running") for j in httpx.get(f"{api_url}/v1/jobs").json()["jobs"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_upload_search_documents_status(ui_env: str, tmp_path: Path) -> None:
    pdf = write_document(tmp_path, "pdf", OWLS, stem="owls")
    upload = page("upload")
    assert "appear here" in upload.info[0].value
    upload.file_uploader(key="files").set_value(
        [
            ("owls.pdf", pdf.read_bytes(), "application/pdf"),
            ("coffee.md", f"# Coffee\n\n{COFFEE}".encode(), "text/markdown"),
            ("broken.exe", b"MZ", "application/octet-stream"),
        ]
    )
    upload.text_input[0].input("birds, drinks")
    upload.button(key="upload_submit").click().run()
    assert not upload.exception
    assert "2 files accepted" in upload.success[0].value
    assert any("broken.exe" in e.value and "unsupported" in e.value for e in upload.error)
    wait_jobs_done(ui_env)
    upload.run()
    shown = texts(upload)
    assert "owls.pdf" in shown and "coffee.md" in shown
    assert (
        "indexed" in shown
        and "failed" in shown
        and "unsupported file type" in str([e.value for e in upload.error])
    )

    search = page("search")
    search.text_input(key="query").input("nocturnal birds hunting")
    search.button(key="search_submit").click().run()
    assert not search.exception
    first = next(m.value for m in search.markdown if m.value.startswith("**1."))
    assert "owls.pdf" in first
    assert "<mark>" in texts(search)  # the query's words are highlighted
    opened = next(b for b in search.button if b.key and b.key.startswith("open_"))
    opened.click().run()
    assert any("owls.pdf" in m.value and "####" in m.value for m in search.markdown)

    # Filters: only coffee.md, by source.
    assert "hybrid" in " ".join(c.value for c in search.caption)  # the default here
    search.selectbox(key="mode").select("Words (BM25)")
    search.button(key="search_submit").click().run()
    assert "sparse" in " ".join(c.value for c in search.caption)
    first = next(m.value for m in search.markdown if m.value.startswith("**1."))
    assert "owls.pdf" in first  # "hunting" matches "hunt" once stemmed
    search.selectbox(key="mode").select("The collection's default")
    search.multiselect(key="sources").select("coffee.md")
    search.button(key="search_submit").click().run()
    sources = [m.value for m in search.markdown if m.value.startswith("**")]
    assert sources and all("coffee.md" in s for s in sources if s.startswith("**1."))

    docs = page("documents")
    table = docs.dataframe[0].value
    assert set(table["source"]) == {"owls.pdf", "coffee.md"}
    assert set(table["tags"]) == {"birds, drinks"}
    docs.selectbox(key="picked").select(
        next(o for o in docs.selectbox(key="picked").options if "coffee" in o)
    )
    docs.run()
    assert docs.button(key="delete").disabled  # nothing is deleted without confirmation
    docs.checkbox(key="confirm_delete").check().run()
    docs.button(key="delete").click().run()
    assert not docs.exception
    assert httpx.get(f"{ui_env}/v1/documents").json()["total"] == 1

    status = page("status")
    assert any("ready" in m.value for m in status.markdown)
    assert {m.label for m in status.metric} >= {"Cache hit rate", "Texts embedded"}
    assert len(status.dataframe) == 2  # collections and recent jobs


@pytest.mark.parametrize("name", ["upload", "search", "documents", "sources", "status"])
def test_pages_explain_an_unreachable_api(
    name: str, monkeypatch: pytest.MonkeyPatch, ui_env: str
) -> None:
    import streamlit as st

    monkeypatch.setenv("QUARRY_API_URL", "http://127.0.0.1:9")
    st.cache_resource.clear()
    app = page(name)
    if name == "upload":
        app.file_uploader(key="files").set_value(("a.txt", b"text", "text/plain"))
        app.button(key="upload_submit").click().run()
    assert not app.exception
    assert app.error and all("cannot reach the Quarry API" in e.value for e in app.error)


def test_failed_files_can_be_retried_from_the_page(ui_env: str, tmp_path: Path) -> None:
    from fpdf import FPDF

    blank = FPDF()
    blank.add_page()  # a page without a word on it: `no_text`, kept for a retry
    upload = page("upload")
    upload.file_uploader(key="files").set_value(
        [
            ("blank.pdf", bytes(blank.output()), "application/pdf"),
            ("owls.txt", OWLS.encode(), "text/plain"),
        ]
    )
    upload.button(key="upload_submit").click().run()
    assert "2 files accepted" in upload.success[0].value
    wait_jobs_done(ui_env)
    upload.run()
    job = httpx.get(f"{ui_env}/v1/jobs").json()["jobs"][0]
    assert job["state"] == "partial" and job["attempts"] == 1
    retry = upload.button(key=f"retry-{job['job_id']}")
    retry.click().run()
    assert not upload.exception
    wait_jobs_done(ui_env)
    again = httpx.get(f"{ui_env}/v1/jobs/{job['job_id']}").json()
    assert again["attempts"] == 2 and again["state"] == "partial"
    blank_entry = next(f for f in again["files"] if f["name"] == "blank.pdf")
    assert blank_entry["error"]["code"] == "no_text" and blank_entry["retryable"]


def test_status_lists_the_embedding_servers_and_why_one_is_out(
    tmp_path: Path, minilm_path: str, redis_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamlit as st

    from ..servers import Process, embedding_nodes, free_port, quarry_env

    (node,) = embedding_nodes(tmp_path / "node", minilm_path, 1)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    env = quarry_env(
        tmp_path / "data",
        minilm_path,
        redis_process.url,
        QUARRY_EMBEDDING_URLS=f"{node.url}/v1,{dead}",
        QUARRY_REMOTE_HEALTH_INTERVAL_S="0.5",
    )
    api = Process("serve", env, tmp_path / "api.log")
    try:
        api.start()
        deadline = time.monotonic() + 30
        while "1 of 2" not in str(httpx.get(api.url + "/readyz").json()):
            assert time.monotonic() < deadline, httpx.get(api.url + "/readyz").json()
            time.sleep(0.2)
        monkeypatch.setenv("QUARRY_API_URL", api.url)
        st.cache_resource.clear()
        status = page("status")
        servers = next(frame.value for frame in status.dataframe if "server" in frame.value.columns)
        rows = {row["server"]: row for row in servers.to_dict("records")}
        assert rows[dead]["state"] == "ejected" and "connect" in rows[dead]["why"]
        assert rows[f"{node.url}/v1"]["state"] in ("up", "probation")
        assert "1 of 2 embedding servers out" in texts(status)
    finally:
        api.stop()
        node.stop()
