"""`quarry sync FOLDER`: the collection follows a real folder's adds, edits, renames and
deletions, with real parts underneath (the CLI through typer's runner, the local seam)."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import app
from ingest.sources import document_id


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
    assert again["fetched"] == 0  # same sizes and times: not even read

    before = stored()
    (folder / "birds" / "owls.md").write_text("Owls swallow their prey whole at dusk.")
    (folder / "coffee.txt").unlink()
    (folder / "tea.txt").rename(folder / "green-tea.txt")
    (folder / "bread.txt").write_text("Sourdough rises slowly with wild yeast.")
    third = sync(folder)
    assert third["ingest"]["ingested"] == 3  # the edit, the new name, the new file
    assert third["fetched"] == 3  # only they were read
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
    assert '"refused": "' in out and '"deleted": []' in out  # the report, as JSON too
    assert set(stored()) == set(FIRST)  # nothing deleted

    code, out = run("sync", str(folder.parent / "missing"), "--json")
    assert code == 1 and "not a folder" in out
    assert set(stored()) == set(FIRST)

    assert sorted(sync(folder, "--force-delete")["deleted"]) == sorted(FIRST)
    assert stored() == {}


def test_names_from_elsewhere_are_adopted_or_left_alone(folder: Path, tmp_path: Path) -> None:
    """A same-named document that a plain ingest of the folder made is adopted (and later
    deleted with its file); one that another folder's sync made is a conflict, untouched."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "coffee.txt").write_text("Another folder's note of the same name.")
    sync(other)
    theirs = stored()["coffee.txt"]
    code, _ = run("ingest", str(folder / "tea.txt"))  # a plain ingest: no folder tag
    assert code == 0
    first = sync(folder)
    conflicts = [e for e in first["ingest"]["errors"] if e["code"] == "name_conflict"]
    assert [e["file"] for e in conflicts] == ["coffee.txt"]
    assert stored()["coffee.txt"] == theirs  # the other folder's document stays
    assert sync(folder)["unchanged"] == 4  # tea.txt adopted; coffee.txt still refused
    (folder / "tea.txt").unlink()
    assert sync(folder)["deleted"] == ["tea.txt"]
    assert "tea.txt" not in stored() and stored()["coffee.txt"] == theirs


def test_decomposed_unicode_names_are_the_names_uploads_store(folder: Path) -> None:
    (folder / unicodedata.normalize("NFD", "café.txt")).write_text("Flat white at the café.")
    assert sync(folder)["ingest"]["ingested"] == 6
    again = sync(folder)
    assert again["unchanged"] == 6 and again["deleted"] == [] and again["ingest"]["files"] == 0


@pytest.mark.parametrize("point", ["after_upsert", "sync_between_deletes"])
def test_a_sync_killed_at_any_stage_converges_on_the_next_run(
    point: str, tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    """A real `quarry sync` process SIGKILLs itself at a named stage (mid-ingest, before
    the deletions, between two of them); the next run ends with the collection an
    uninterrupted run gives, name for name and document for document."""
    import subprocess
    import sys

    from ..servers import quarry_env

    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(6):
        (notes / f"note-{i}.txt").write_text(f"Note {i}: owls, tea and bread, take {i}.")
    env = quarry_env(tmp_path / "data", minilm_path, redis_process.url)

    def quarry(env: dict[str, str], *args: str, failpoints: str = "") -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=env | {"QUARRY_FAILPOINTS": failpoints},
            capture_output=True,
            text=True,
            timeout=300,
        )
        return done.returncode, done.stdout + done.stderr

    assert quarry(env, "sync", str(notes))[0] == 0
    for i in (0, 1, 2):  # three gone, two edited, one new
        (notes / f"note-{i}.txt").unlink()
    (notes / "note-3.txt").write_text("Note 3 was rewritten about kilns.")
    (notes / "note-4.txt").write_text("Note 4 was rewritten about tides.")
    (notes / "note-9.txt").write_text("Note 9 is new, about crows.")
    code, out = quarry(env, "sync", str(notes), failpoints=f"{point}=kill")
    assert code == -9, out  # it died there
    code, out = quarry(env, "sync", str(notes), "--json")
    assert code == 0, out
    code, out = quarry(env, "docs", "list", "--json")
    assert code == 0, out
    converged = sorted((d["source"], d["doc_id"], d["complete"]) for d in json.loads(out))
    # What an uninterrupted run gives: each file's document (its name and bytes), whole
    uninterrupted = sorted(
        (p.name, document_id(p.name, p.read_bytes()), True) for p in notes.iterdir()
    )
    assert converged == uninterrupted
    assert [name for name, _, _ in converged] == [f"note-{i}.txt" for i in (3, 4, 5, 9)]


def test_a_named_run_shows_its_stage_and_counts_while_it_goes(folder: Path) -> None:
    from app.cli_common import load_settings, quarry_for
    from app.sources import Source, SourceRegistry, run_source

    settings = load_settings()
    registry = SourceRegistry(settings.data_dir / "sources")
    registry.add(Source("notes", str(folder), "quarry"))
    seen: list[dict[str, Any]] = []
    update = registry.update

    def watched(name: str, **changes: Any) -> Any:
        if changes.get("progress"):
            seen.append(changes["progress"])
        return update(name, **changes)

    registry.update = watched  # type: ignore[method-assign]
    with quarry_for(None, settings) as quarry:
        done = run_source(quarry, registry, "notes", settings.data_dir / "sync")
    assert [s["stage"] for s in seen] == ["listing", "comparing", "ingesting", "deleting"]
    assert seen[2]["listed"] == 5 and seen[2]["to_ingest"] == 5
    assert done.progress is None and not done.running  # the run is over: its report stays
    assert done.last_report is not None and done.last_report["ingest"]["ingested"] == 5
