from __future__ import annotations

import pytest

from embedding.model_source import resolve_model
from embedding.st_embedder import SentenceTransformerEmbedder
from ingest.chunking import Chunker, WholeDocument
from ingest.models import Element


@pytest.fixture(scope="module")
def chunker(minilm_path: str) -> Chunker:
    embedder = SentenceTransformerEmbedder(resolve_model(minilm_path))
    return Chunker(embedder.tokenizer, 64, 16)


def sentences(n: int, topic: str) -> str:
    return " ".join(f"Sentence {i} talks about {topic} in some detail." for i in range(n))


def test_chunks_never_exceed_the_bound(chunker: Chunker) -> None:
    elements = [Element(sentences(40, "rivers"), "NarrativeText", page=1)] + [
        Element(sentences(3, f"topic {i}"), "NarrativeText", page=2) for i in range(10)
    ]
    chunks = chunker.chunk(elements)
    assert len(chunks) > 5
    counted = chunker.count([c.text for c in chunks])
    assert max(counted) <= 64
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].page == 1 and chunks[-1].page == 2


def test_long_element_windows_overlap(chunker: Chunker) -> None:
    chunks = chunker.chunk([Element(sentences(30, "mountains"), "NarrativeText")])
    first, second = chunks[0].text, chunks[1].text
    tail = first.split()[-5:]
    assert " ".join(tail) in second, "consecutive windows share their overlap"


def test_titles_start_sections_and_tables_stay_whole(chunker: Chunker) -> None:
    table = "| a | b |\n| 1 | 2 |\n| 3 | 4 |"
    elements = [
        Element("Introduction", "Title"),
        Element(sentences(6, "intro"), "NarrativeText"),
        Element("Results", "Title"),
        Element(table, "Table"),
    ]
    chunks = chunker.chunk(elements)
    assert chunks[-1].text.startswith("Results")
    assert sum(table in c.text for c in chunks) >= 1
    assert "Table" in chunks[-1].element_types


def test_whole_document_is_one_chunk() -> None:
    chunks = WholeDocument().chunk([Element("a", "Title"), Element("b c", "NarrativeText")])
    assert len(chunks) == 1 and chunks[0].text == "a\n\nb c"
