"""Every real document in ../shared/docs yields chunks or a clear per-file error."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.resources import Resources
from app.settings import Settings
from ingest.sources import FileSource, expand_paths
from retrieval.models import SearchPlan

from .conftest import SHARED

pytestmark = pytest.mark.corpus

READ_WITH_TOOLS = {
    "non_text_searchable.pdf": "tesseract",
    "loremipsum-flat.pdf": "tesseract",
    "chi_sim_image.jpeg": "tesseract",
    "english-and-korean.png": "tesseract",
    "fake.doc": "soffice",
    "fake-power-point.ppt": "soffice",
    "tests-example.xls": "soffice",
}

KNOWN_CODES = {
    "empty_file",
    "encrypted",
    "no_text",
    "unreadable",
    "unsupported_type",
    "unsupported_here",
}


@pytest.fixture()
def resources(settings: Settings, tiny_qwen: Path) -> Iterator[Resources]:
    """What is tested here is reading the documents: a small Qwen3 (random weights, the
    real tokenizer) embeds their thousands of chunks in a fraction of MiniLM's time, and BM25
    finds them."""
    res = Resources(settings.model_copy(update={"embedding_model": str(tiny_qwen)}))
    yield res
    res.close()


@pytest.mark.skipif(
    not (SHARED / "docs").is_dir(), reason="../shared/docs is absent on this machine"
)
def test_shared_documents(resources: Resources) -> None:
    files, _ = expand_paths([str(SHARED / "docs")])
    report = resources.pipeline("corpus").run([FileSource(f, key) for f, key in files])
    assert report.files == len(files) and report.ingested + len(report.errors) == len(files)
    for error in report.errors:
        assert error.code in KNOWN_CODES, error
        assert error.file in error.message and len(error.message) > len(error.file) + 10
    stored = {d.source: d for d in resources.store.documents("corpus")}
    failed = {e.file for e in report.errors}
    for _, key in files:
        assert key in failed or stored[key].chunks > 0
    # Damaged but readable files must not be written off.
    assert "failure-after-repair.pdf" in stored
    assert "fake-text-utf-16-be.txt" in stored
    # Scans, photos of pages and legacy Office files are read where the tools are installed.
    for name, tool in READ_WITH_TOOLS.items():
        if shutil.which(tool):
            assert stored[name].chunks > 0, name
    hits = (
        resources.search_service("corpus")
        .search("corpus", "ReAct reasoning and acting", top_k=3, plan=SearchPlan(mode="sparse"))
        .hits
    )
    assert hits[0].source.endswith("react_paper.pdf")
