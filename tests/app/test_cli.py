"""The `quarry` CLI end to end, through typer's runner, with real parts underneath."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.schemas import Hit

from ..ingest.documents import write_document


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, minilm_path: str, redis_process) -> Path:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("QUARRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QUARRY_EMBEDDING_MODEL", minilm_path)
    monkeypatch.setenv("QUARRY_REDIS_URL", redis_process.url)
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    write_document(docs, "md", "Owls hunt mice at night using silent flight.", stem="owls")
    write_document(
        docs, "html", "Espresso is brewed by forcing hot water through coffee.", stem="coffee"
    )
    (docs / "nothing.txt").write_bytes(b"")
    return docs


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout


def test_ingest_search_docs_stats(env: Path) -> None:
    code, out = run("ingest", str(env), "--meta", "shelf=b2", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["files"] == 3 and report["ingested"] == 2 and report["unchanged"] == 0
    assert report["chunks"] >= 2
    assert (
        report["errors"][0]["code"] == "empty_file" and "nothing.txt" in report["errors"][0]["file"]
    )

    code, out = run("ingest", str(env / "*.md"), str(env / "*.html"), "--json")
    assert code == 0 and json.loads(out)["unchanged"] == 2

    code, out = run("search", "which bird flies silently?", "-k", "1", "--json")
    hits = json.loads(out)
    assert code == 0 and Path(hits[0]["source"]).name == "owls.md"
    assert set(hits[0]) == set(Hit.model_fields)  # the API's own hit shape

    code, out = run("search", "coffee", "--filter", "shelf=none", "--json")
    assert code == 0 and json.loads(out) == []

    code, out = run("docs", "list", "--json")
    docs = json.loads(out)
    assert len(docs) == 2 and docs[0]["metadata"] == {"shelf": "b2"}

    code, _ = run("docs", "delete", docs[0]["doc_id"])
    assert code == 0
    code, out = run("stats", "--json")
    stats = json.loads(out)
    assert stats["collections"][0]["documents"] == 1


def test_every_file_failing_exits_1(env: Path) -> None:
    code, out = run("ingest", str(env / "nothing.txt"), str(env / "missing.pdf"), "--json")
    report = json.loads(out)
    assert code == 1 and report["ingested"] == 0
    assert sorted(e["code"] for e in report["errors"]) == ["empty_file", "not_found"]


def test_bad_meta_is_a_clear_error(env: Path) -> None:
    result = CliRunner().invoke(app, ["ingest", str(env), "--meta", "novalue"])
    assert result.exit_code == 1
    assert "--meta 'novalue': expected key=value" in result.stderr
