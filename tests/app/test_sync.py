"""`quarry sync FOLDER`: the collection follows a real folder's adds, edits, renames and
deletions, with real parts underneath (the CLI through typer's runner, the local seam)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import app


@pytest.fixture()
def folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, minilm_path: str, redis_process: Any
) -> Path:
    monkeypatch.setenv("QUARRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QUARRY_EMBEDDING_MODEL", minilm_path)
    monkeypatch.setenv("QUARRY_REDIS_URL", redis_process.url)
    docs = tmp_path / "notes"
    (docs / "birds").mkdir(parents=True)
    (docs / "birds" / "owls.md").write_text("Owls hunt mice at night using silent flight.")
    (docs / "coffee.txt").write_text("Espresso is brewed by forcing hot water through coffee.")
    (docs / "tea.txt").write_text("Green tea leaves are steamed or pan-fired after picking.")
    (docs / "birds" / "crows.md").write_text("Crows remember the faces of people.")
    (docs / "water.txt").write_text("Soft water has few dissolved minerals.")
    return docs


FIRST = ["birds/owls.md", "birds/crows.md", "coffee.txt", "tea.txt", "water.txt"]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout + " ".join(result.stderr.split())


def sync(folder: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    code, out = run("sync", str(folder), "--json", *extra)
    assert code == 0, out
    return json.loads(out)  # type: ignore[no-any-return]


def stored() -> dict[str, str]:
    code, out = run("docs", "list", "--json")
    assert code == 0
    return {doc["source"]: doc["doc_id"] for doc in json.loads(out)}


def test_a_folder_is_followed_through_edits_renames_and_deletions(folder: Path) -> None:
    first = sync(folder)
    assert first["ingest"]["ingested"] == 5 and first["deleted"] == []
    assert set(stored()) == set(FIRST)

    again = sync(folder)  # nothing changed: nothing is uploaded, parsed or embedded
    assert again["unchanged"] == 5 and again["ingest"]["files"] == 0

    before = stored()
    (folder / "birds" / "owls.md").write_text("Owls swallow their prey whole at dusk.")
    (folder / "coffee.txt").unlink()
    (folder / "tea.txt").rename(folder / "green-tea.txt")
    (folder / "bread.txt").write_text("Sourdough rises slowly with wild yeast.")
    third = sync(folder)
    assert third["ingest"]["ingested"] == 3  # the edit, the new name, the new file
    assert sorted(third["deleted"]) == ["coffee.txt", "tea.txt"]
    after = stored()
    assert set(after) == {
        "birds/owls.md",
        "birds/crows.md",
        "water.txt",
        "green-tea.txt",
        "bread.txt",
    }
    assert after["birds/owls.md"] != before["birds/owls.md"]

    code, out = run("search", "espresso brewed with hot water", "--mode", "sparse", "--json")
    assert code == 0 and all(hit["source"] != "coffee.txt" for hit in json.loads(out))
    assert sync(folder)["ingest"]["files"] == 0  # and it stays converged


def test_a_run_that_would_delete_most_documents_stops_until_forced(folder: Path) -> None:
    sync(folder)
    moved = folder.parent / "elsewhere"
    shutil.move(folder, moved)  # the folder unmounted, say: it lists empty
    folder.mkdir()
    code, out = run("sync", str(folder), "--json")
    assert code == 1 and "5 of its 5 documents" in out and "--force-delete" in out
    assert set(stored()) == set(FIRST)  # nothing deleted

    code, out = run("sync", str(folder.parent / "missing"), "--json")
    assert code == 1 and "not a folder" in out
    assert set(stored()) == set(FIRST)

    assert sorted(sync(folder, "--force-delete")["deleted"]) == sorted(FIRST)
    assert stored() == {}


def test_documents_not_from_the_folder_are_never_touched(folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "coffee.txt").write_text("An upload of the same name from another folder.")
    code, _ = run("ingest", str(other))  # not synced: no `synced_from`
    assert code == 0
    sync(folder)
    (folder / "tea.txt").unlink()
    assert sync(folder)["deleted"] == ["tea.txt"]
    assert "coffee.txt" in stored()
