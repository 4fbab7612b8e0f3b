from __future__ import annotations

from collections.abc import Sequence

import pytest

from embedding.model_source import resolve_model
from embedding.st_embedder import SentenceTransformerEmbedder
from embedding.tokenizers import SharedTokenizer, Tokens
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


def test_a_run_without_spaces_is_still_cut(chunker: Chunker) -> None:
    # A word-piece tokenizer sees a 100+ character "word" as one unknown token: only a
    # character bound keeps such a run from becoming one enormous chunk.
    blob = "x" * 300_000
    chunks = chunker.chunk([Element(blob, "NarrativeText"), Element("short tail", "Title")])
    assert len(chunks) >= 300_000 // chunker.max_chars
    assert max(len(c.text) for c in chunks) <= chunker.max_chars
    assert sum(c.text.count("x") for c in chunks) >= 300_000
    assert "short tail" in chunks[-1].text


def test_threads_never_share_a_tokenizer(minilm_path: str) -> None:
    import threading

    embedder = SentenceTransformerEmbedder(resolve_model(minilm_path), max_length=16)
    chunker = Chunker(SharedTokenizer(embedder.load_tokenizer()), 32, 8)
    texts = [sentences(5 + i % 7, f"topic {i}") for i in range(40)]
    expected_chunks = [chunker.chunk([Element(t, "NarrativeText")]) for t in texts]
    expected_counts = embedder.token_counts(texts)
    problems: list[BaseException] = []

    def chunk_all() -> None:
        try:
            for _ in range(3):
                got = [chunker.chunk([Element(t, "NarrativeText")]) for t in texts]
                assert got == expected_chunks
        except BaseException as exc:
            problems.append(exc)

    def count_all() -> None:  # truncating calls: they reconfigure a shared tokenizer
        try:
            for _ in range(30):
                assert embedder.token_counts(texts) == expected_counts
        except BaseException as exc:
            problems.append(exc)

    threads = [threading.Thread(target=chunk_all) for _ in range(4)]
    threads += [threading.Thread(target=count_all) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not problems, problems[0]
    assert max(expected_counts) == 16  # truncation was in effect for the counting threads


class RecordingTokenizer(SharedTokenizer):
    """The real shared tokenizer, noting every text it is asked to encode."""

    def __init__(self, template: object) -> None:
        super().__init__(template)
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str], special: bool = False) -> list[Tokens]:
        self.seen.extend(texts)
        return super().encode(texts, special)


def test_texts_are_not_tokenized_again_and_counts_stay_exact(minilm_path: str) -> None:
    # Tokenizing is most of a chunker's time: an over-long element's windows are cut from
    # the tokens that counted it, and a group counted whole for its tail is not counted
    # again; every chunk's count stays what a fresh tokenizer says.
    embedder = SentenceTransformerEmbedder(resolve_model(minilm_path))
    tokenizer = RecordingTokenizer(embedder.load_tokenizer())
    chunker = Chunker(tokenizer, 64, 16)
    long_text = sentences(12, "rivers")
    elements = [
        Element("A study of rivers", "Title"),
        Element(long_text, "NarrativeText"),  # over-long: windows
        Element(sentences(2, "deltas"), "NarrativeText"),
        Element("Methods", "Title"),
        Element(sentences(4, "sampling"), "NarrativeText"),
        Element(sentences(3, "sediment"), "NarrativeText"),
        Element(sentences(2, "gauges"), "NarrativeText"),
    ]
    chunks = chunker.chunk(elements)
    assert len(chunks) >= 4
    assert tokenizer.seen.count(long_text) == 1  # counted, and its windows cut from that
    joined = [c.text for c in chunks if "\n\n" in c.text]  # groups of several pieces
    assert joined and all(tokenizer.seen.count(text) == 1 for text in joined)
    fresh = SharedTokenizer(embedder.load_tokenizer()).counts([c.text for c in chunks])
    assert [c.tokens for c in chunks] == fresh
    assert max(fresh) <= 64
