"""The CLI in this process and the CLI through a running server: same results, same JSON,
same errors, same side effects (originals kept by an ingest, removed by a delete)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import app

from ..ingest.documents import write_document
from ..servers import Process, quarry_env


def _run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def _session(env: dict[str, str], docs: Path, api: list[str]) -> dict[str, Any]:
    """The same operations through one front door, and what each gave."""
    seen: dict[str, Any] = {}
    code, out, _ = _run(env, "ingest", str(docs), "--meta", "shelf=b2", "--json", *api)
    seen["ingest"] = (code, {k: v for k, v in json.loads(out).items() if k != "errors"})
    code, out, _ = _run(env, "search", "which bird flies silently?", "-k", "2", "--json", *api)
    hits = json.loads(out)
    seen["search"] = [
        (h["chunk_id"], h["source"], h["text"], round(h["score"], 4), sorted(h)) for h in hits
    ]
    code, out, _ = _run(env, "docs", "list", "--json", *api)
    docs_listed = json.loads(out)
    seen["docs"] = sorted(
        (d["source"], d["doc_id"], d["chunks"], json.dumps(d["metadata"]), sorted(d))
        for d in docs_listed
    )
    code, _, err = _run(env, "search", "owls", "-c", "nope", "--json", *api)
    seen["missing collection"] = (code, " ".join(err.split()))
    code, _, err = _run(env, "docs", "delete", "0" * 32, *api)
    seen["missing document"] = (code, " ".join(err.split()))
    originals = Path(env["QUARRY_DATA_DIR"]) / "originals"
    seen["originals kept"] = sum(1 for p in originals.rglob("*") if p.is_file())
    owls = next(d for d in docs_listed if d["source"] == "owls.md")
    code, _, _ = _run(env, "docs", "delete", owls["doc_id"], *api)
    seen["originals after delete"] = (code, sum(1 for p in originals.rglob("*") if p.is_file()))
    for run in ("sync", "sync again"):  # the same folder kept in another collection
        code, out, _ = _run(env, "sync", str(docs), "-c", "synced", "--json", *api)
        done = json.loads(out)
        seen[run] = (code, done["listed"], done["unchanged"], done["ingest"]["files"])
    code, out, _ = _run(env, "stats", "--json", *api)
    stats = json.loads(out)
    seen["stats"] = [(c["collection"], c["documents"], c["chunks"]) for c in stats["collections"]]
    return seen


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    write_document(folder, "md", "Owls hunt mice at night using silent flight.", stem="owls")
    write_document(folder, "html", "Espresso is brewed by forcing hot water.", stem="coffee")
    write_document(folder, "txt", "Tides follow the moon twice a day.", stem="tides")
    (folder / "empty.txt").write_bytes(b"")
    return folder


def test_the_cli_gives_the_same_answers_here_and_through_a_server(
    docs: Path, tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    here = quarry_env(tmp_path / "local", minilm_path, redis_process.url)
    local = _session(here, docs, [])
    served_env = quarry_env(tmp_path / "served", minilm_path, redis_process.url)
    server = Process("serve", served_env, tmp_path / "server.log")
    server.start()
    try:
        remote = _session(served_env | {"QUARRY_API_URL": server.url}, docs, [])
    finally:
        server.stop()
    assert local["ingest"] == (
        0,
        {
            "files": 4,
            "ingested": 3,
            "unchanged": 0,
            "superseded": 0,
            "chunks": 3,
            "warnings": [],
        },
    )
    for key in local:
        assert local[key] == remote[key], key
    assert (
        local["missing collection"][0] == 1 and "does not exist" in local["missing collection"][1]
    )
    assert local["originals kept"] == 3 and local["originals after delete"] == (0, 2)
    # (listed, unchanged, sent): the empty file is sent again, and refused from the ledger
    assert local["sync"] == (0, 4, 0, 4) and local["sync again"] == (0, 4, 3, 1)
