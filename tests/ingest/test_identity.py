"""One identity rule: a document is one version of one source key; replacing is safe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.resources import Resources
from app.settings import Settings
from ingest.models import FileError
from ingest.pipeline import SilentObserver
from ingest.sources import FileSource, document_id, expand_paths, source_key

TEXT = "Glaciers carve U-shaped valleys. " * 30


def test_source_keys_are_relative_to_what_was_named(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    for name in ("a.txt", "sub/b.txt", "sub/c.md"):
        (tmp_path / "docs" / name).write_text("x")
    keys = {key for _, key in expand_paths([str(tmp_path / "docs")])[0]}
    assert keys == {"a.txt", "sub/b.txt", "sub/c.md"}
    globbed = {key for _, key in expand_paths([str(tmp_path / "docs" / "**" / "*.txt")])[0]}
    assert globbed == {"a.txt", "sub/b.txt"}
    assert expand_paths([str(tmp_path / "docs" / "sub" / "b.txt")])[0][0][1] == "b.txt"
    assert source_key(tmp_path / "docs" / "a.txt", None) == "a.txt"
    assert document_id("a.txt", b"same") != document_id("b.txt", b"same")


def test_same_bytes_under_two_names_are_two_documents(resources: Resources, tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(TEXT)
    b.write_text(TEXT)
    report = resources.pipeline("test").run([FileSource(a, "a.txt"), FileSource(b, "b.txt")])
    assert report.ingested == 2 and report.unchanged == 0
    docs = {d.source: d for d in resources.store.documents("test")}
    assert set(docs) == {"a.txt", "b.txt"}
    resources.store.delete_document("test", docs["a.txt"].doc_id)
    hits = resources.search_service("test").search("test", "glacier valleys", top_k=5).hits
    assert hits and {h.source for h in hits} == {"b.txt"}


def test_forced_reingest_with_fewer_chunks_leaves_no_stale_ones(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "long.txt"
    path.write_text(" ".join(f"Paragraph {i} is about glaciers and fjords." for i in range(200)))
    small = Resources(settings.model_copy(update={"chunk_tokens": 48, "chunk_overlap": 8}))
    small.pipeline("test").run([FileSource(path, "long.txt")])
    [before] = small.store.documents("test")
    small.close()
    big = Resources(settings.model_copy(update={"chunk_tokens": 256, "chunk_overlap": 16}))
    assert big.pipeline("test").run([FileSource(path, "long.txt")]).unchanged == 1
    report = big.pipeline("test", force=True).run([FileSource(path, "long.txt")])
    assert report.ingested == 1
    [after] = big.store.documents("test")
    assert after.doc_id == before.doc_id and after.chunks < before.chunks
    assert after.complete and big.store.count("test") == after.chunks
    big.close()


class Recorder(SilentObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def file_stage(self, name: str, stage: str, count: int) -> None:
        self.events.append((stage, count))

    def file_done(self, name: str, status: str, chunks: int, error: FileError | None) -> None:
        self.events.append(("done", status))


def test_progress_moves_per_embedded_batch(resources: Resources, tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("\n\n".join(f"Section {i}. " + TEXT for i in range(150)))
    recorder = Recorder()
    resources.pipeline("test", recorder).run([FileSource(path, "big.txt")])
    embedded = [count for stage, count in recorder.events if stage == "embedded"]
    chunked = next(count for stage, count in recorder.events if stage == "chunked")
    assert len(embedded) >= 3 and embedded == sorted(embedded) and embedded[-1] == chunked
    first_stored = next(i for i, (stage, _) in enumerate(recorder.events) if stage == "stored")
    assert recorder.events.index(("embedded", embedded[0])) < first_stored
