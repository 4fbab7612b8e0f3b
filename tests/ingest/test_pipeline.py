"""The whole ingest path with real parts: MiniLM, the embedded Qdrant engine, a Redis process."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.resources import Resources
from app.settings import Settings
from ingest.sources import FileSource, expand_paths
from retrieval.errors import RecipeMismatchError

from .documents import write_document

TOPICS = {
    "volcano": "Mount Etna erupted again, sending lava flows and ash over Sicily's villages.",
    "bread": "To bake sourdough bread, feed the starter, knead the dough and proof it overnight.",
    "chess": "The Sicilian Defence is a chess opening that begins 1.e4 c5 for the black pieces.",
}


def corpus(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_document(folder, "txt", text, stem=name) for name, text in TOPICS.items()]
    paths.append(
        write_document(folder, "pdf", TOPICS["volcano"] + " Pyroclastic flows.", stem="report")
    )
    (folder / "empty.txt").write_bytes(b"")
    return paths


def sources(folder: Path, **meta: str) -> list[FileSource]:
    files, missing = expand_paths([str(folder)])
    assert not missing
    return [FileSource(path, display=key, metadata=dict(meta)) for path, key in files]


def test_ingest_then_search_finds_the_right_document(resources: Resources, tmp_path: Path) -> None:
    corpus(tmp_path / "docs")
    report = resources.pipeline("test").run(sources(tmp_path / "docs", team="geo"))
    assert report.files == 5 and report.ingested == 4 and report.chunks >= 4
    assert [e.code for e in report.errors] == ["empty_file"]
    assert "empty.txt" in report.errors[0].file
    service = resources.search_service("test")
    hits = service.search("test", "how do I make bread rise?", top_k=3).hits
    assert hits[0].source == "bread.txt"
    hits = service.search("test", "opening moves for black", top_k=1).hits
    assert hits[0].source == "chess.txt"
    filtered = service.search("test", "lava", top_k=5, filters={"source": hits[0].source}).hits
    assert {h.source for h in filtered} == {hits[0].source}
    assert service.search("test", "lava", top_k=5, filters={"team": "nope"}).hits == []
    docs = resources.store.documents("test")
    assert len(docs) == 4 and all(d.metadata == {"team": "geo"} for d in docs)


def test_unchanged_rerun_loads_no_model_and_writes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    corpus(tmp_path / "docs")
    first = Resources(settings)
    first.pipeline("test").run(sources(tmp_path / "docs"))
    before = {d.doc_id: d.ingested_at for d in first.store.documents("test")}
    first.close()
    second = Resources(settings)
    report = second.pipeline("test").run(sources(tmp_path / "docs"))
    assert report.unchanged == 4 and report.ingested == 0 and report.chunks == 0
    assert not second.model_loaded and not report.model_loaded
    assert [e.code for e in report.errors] == ["empty_file"]
    assert {d.doc_id: d.ingested_at for d in second.store.documents("test")} == before
    second.close()


def test_changed_file_replaces_its_old_chunks(resources: Resources, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    path = write_document(folder, "txt", " ".join([TOPICS["volcano"]] * 40), stem="notes")
    resources.pipeline("test").run(sources(folder))
    old = resources.store.documents("test")
    assert len(old) == 1 and old[0].chunks > 1
    path.write_text(TOPICS["bread"])
    resources.pipeline("test").run(sources(folder))
    new = resources.store.documents("test")
    assert len(new) == 1 and new[0].doc_id != old[0].doc_id
    assert resources.store.count("test") == new[0].chunks == 1


def test_a_bad_file_never_loses_the_rest(resources: Resources, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    corpus(folder)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7 truncated garbage")
    (folder / "tool.exe").write_bytes(b"MZ")
    report = resources.pipeline("test").run(sources(folder))
    assert report.ingested == 4
    assert sorted(e.code for e in report.errors) == ["empty_file", "unreadable", "unsupported_type"]


def test_other_recipe_is_refused_before_any_work(
    settings: Settings, tiny_qwen: Path, tmp_path: Path
) -> None:
    corpus(tmp_path / "docs")
    res = Resources(settings)
    res.pipeline("test").run(sources(tmp_path / "docs"))
    res.close()
    other = Resources(settings.model_copy(update={"embedding_model": str(tiny_qwen)}))
    with pytest.raises(RecipeMismatchError) as info:
        other.check_recipe_early("test")
    assert "model" in info.value.message and not other.model_loaded
    with pytest.raises(RecipeMismatchError):
        other.search_service("test")
    other.close()


def test_qwen3_model_end_to_end(settings: Settings, tiny_qwen: Path, tmp_path: Path) -> None:
    corpus(tmp_path / "docs")
    res = Resources(
        settings.model_copy(update={"embedding_model": str(tiny_qwen), "embedding_dim": 32})
    )
    report = res.pipeline("qwen").run(sources(tmp_path / "docs"))
    assert report.ingested == 4
    recipe = res.store.recipe("qwen")
    assert recipe is not None and recipe.dimension == 32
    hits = res.search_service("qwen").search("qwen", "anything", top_k=2).hits
    assert len(hits) == 2
    res.close()


def _texts(resources: Resources, collection: str) -> set[str]:
    found = resources.store.documents(collection)
    return {h.text for d in found for h in resources.store.chunks(collection, d.doc_id)}


def test_the_newest_acknowledged_version_wins_whatever_order_they_finish_in(
    resources: Resources, tmp_path: Path
) -> None:
    """Versions are ordered by the number acknowledged with the upload, not by who ends
    last: an older version that finishes late is dropped as `superseded`."""
    versions = {}
    for seq, text in ((1, "Version one: owls."), (2, "Version two: herons."), (3, "Three: ibis.")):
        folder = tmp_path / f"v{seq}"
        folder.mkdir()
        (folder / "notes.txt").write_text(text, encoding="utf-8")
        versions[seq] = FileSource(folder / "notes.txt", display="notes.txt", seq=seq)
    newest = resources.pipeline("v").run([versions[3]])
    assert newest.ingested == 1
    late = resources.pipeline("v").run([versions[1]])  # acknowledged first, done last
    assert late.superseded == 1 and late.ingested == 0
    assert _texts(resources, "v") == {"Three: ibis."}
    # v2 was parsed and stored while v3 was live (a race): it still does not win.
    resources.pipeline("v").run([versions[2]])
    assert _texts(resources, "v") == {"Three: ibis."}
    # An unchanged re-upload acknowledged later takes the version over, so an older one in
    # flight can no longer replace it.
    again = FileSource(versions[3].path, display="notes.txt", seq=5)
    assert resources.pipeline("v").run([again]).unchanged == 1
    mid = FileSource(versions[2].path, display="notes.txt", seq=4)
    assert resources.pipeline("v").run([mid]).superseded == 1
    assert _texts(resources, "v") == {"Three: ibis."}
    newer = FileSource(versions[1].path, display="notes.txt", seq=6)
    assert resources.pipeline("v").run([newer]).ingested == 1
    assert _texts(resources, "v") == {"Version one: owls."}
