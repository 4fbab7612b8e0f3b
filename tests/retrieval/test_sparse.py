"""BM25 tokenisation that holds for the languages Quarry ingests, not whitespace alone."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest

from retrieval.edge_store import EdgeStore
from retrieval.models import ChunkRecord, CollectionRecipe, SearchPlan, chunk_id
from retrieval.sparse import (
    AVG256_SCHEME,
    BM25_SCHEME,
    ENGLISH_ONLY_SCHEME,
    Bm25Encoder,
    UnknownSchemeError,
    encoder,
)

# (language, documents, a query and the document it should find first)
CORPORA = {
    "chinese": (
        [
            "我们在北京大学学习自然语言处理。",
            "上海的天气今天很热适合去海边。",
            "猫喜欢在阳光下睡觉。",
        ],
        "自然语言处理课程",
        0,
    ),
    "japanese": (
        [
            "東京都に住んでいて、毎日電車で通勤します。",
            "日本語の形態素解析は難しい。",
            "富士山は日本で一番高い山です。",
        ],
        "形態素解析",
        1,
    ),
    "korean": (
        [
            "서울은 한국의 수도입니다.",
            "한국어 형태소 분석은 어렵습니다.",
            "김치는 발효 음식입니다.",
        ],
        "형태소 분석",
        1,
    ),
    "arabic": (
        [
            "القاهرة هي عاصمة مصر.",
            "اللغة العربية جميلة والمكتبات كثيرة.",
            "الشاي الأخضر مفيد للصحة.",
        ],
        "المكتبات العربية",
        1,
    ),
    "english": (
        ["Owls hunted mice at night.", "The runners were running to the houses.", "Tea is hot."],
        "a runner runs home to his house",
        1,
    ),
}


def test_tokens_are_segmented_stemmed_and_stripped_of_stop_words() -> None:
    bm25 = Bm25Encoder()
    chinese = bm25.documents(["我们在北京大学学习自然语言处理"])[0]
    assert len(chinese.indices) > 3  # segmented, not one whitespace "word"
    running, runs = bm25.queries(["running", "runs"])
    assert running.indices == runs.indices  # one stem
    assert not bm25.queries(["the of and"])[0]  # English stop words only


@pytest.mark.parametrize("language", sorted(CORPORA))
def test_bm25_finds_the_document_in_each_language(tmp_path: Path, language: str) -> None:
    docs, query, expected = CORPORA[language]
    bm25 = Bm25Encoder()
    store = EdgeStore(tmp_path)
    store.ensure_collection("c", CollectionRecipe("m", 4, "i", sparse=BM25_SCHEME))
    filler = np.array([1.0, 0, 0, 0], dtype=np.float32)
    store.upsert(
        "c",
        [
            ChunkRecord(chunk_id(f"d{i}", 0), filler, {"doc_id": f"d{i}", "text": t}, w)
            for i, (t, w) in enumerate(zip(docs, bm25.documents(docs), strict=True))
        ],
    )
    hits = store.search("c", None, 3, sparse=bm25.queries([query]), plan=SearchPlan("sparse"))
    assert hits[0] and hits[0][0].doc_id == f"d{expected}", (language, hits[0])
    store.close()


# (a query, a passage holding its words in other inflections, a passage without them)
INFLECTED = {
    "russian": ("книга в библиотеке", "Книги из библиотеки выдают всем.", "Сегодня тепло."),
    "greek": ("υπολογιστής", "Οι υπολογιστές είναι εδώ.", "Καλός καιρός."),  # noqa: RUF001
    "arabic": ("مكتبة", "زُرْنَا المَكْتَبَاتِ القديمة.", "الشاي الأخضر مفيد."),  # vowelled
}


@pytest.mark.parametrize("language", sorted(INFLECTED))
def test_words_of_stemmed_scripts_match_across_inflections(language: str) -> None:
    query, inflected, other = INFLECTED[language]

    def scores(scheme: str) -> list[float]:
        bm25 = Bm25Encoder(scheme)
        asked = dict(zip(*astuple(bm25.queries([query])[0]), strict=True))
        return [
            sum(asked.get(t, 0.0) * w for t, w in zip(*astuple(doc), strict=True))
            for doc in bm25.documents([inflected, other])
        ]

    assert scores(BM25_SCHEME)[0] > 0 and scores(BM25_SCHEME)[1] == 0
    assert scores(ENGLISH_ONLY_SCHEME) == [0, 0]  # only the exact forms matched before


def test_latin_text_reads_as_before_and_unknown_schemes_are_refused() -> None:
    text = ["The runners were running to the houses of Zürich and Ærø."]
    assert Bm25Encoder(BM25_SCHEME).documents(text) == Bm25Encoder(ENGLISH_ONLY_SCHEME).documents(
        text
    )
    with pytest.raises(UnknownSchemeError, match="unknown scheme"):
        Bm25Encoder("qdrant-bm25/some-other")


def test_backfill_moves_an_older_scheme_to_the_current_one(tmp_path: Path) -> None:
    """A collection written in the English-only scheme keeps its scheme (and is searched in
    it) until `backfill-sparse` rebuilds its weights in the current one."""
    store = EdgeStore(tmp_path)
    old = encoder(ENGLISH_ONLY_SCHEME)
    store.ensure_collection("c", CollectionRecipe("m", 4, "i", sparse=ENGLISH_ONLY_SCHEME))
    texts = ["Книги из библиотеки выдают всем.", "Сегодня тепло.", "Tea is hot."]
    filler = np.array([1.0, 0, 0, 0], dtype=np.float32)
    store.upsert(
        "c",
        [
            ChunkRecord(chunk_id(f"d{i}", 0), filler, {"doc_id": f"d{i}", "text": t}, w)
            for i, (t, w) in enumerate(zip(texts, old.documents(texts), strict=True))
        ],
    )
    plan = SearchPlan("sparse")
    before = store.search("c", None, 3, sparse=old.queries(["библиотека"]), plan=plan)
    assert before == [[]]
    assert store.add_sparse("c", BM25_SCHEME, encoder(BM25_SCHEME).documents) == 3
    assert store.recipe("c").sparse == BM25_SCHEME  # type: ignore[union-attr]
    after = store.search(
        "c", None, 3, sparse=encoder(BM25_SCHEME).queries(["библиотека"]), plan=plan
    )
    assert [h.doc_id for h in after[0]] == ["d0"]
    assert store.add_sparse("c", BM25_SCHEME, encoder(BM25_SCHEME).documents) == 0
    store.close()


def test_every_earlier_scheme_is_still_read_and_an_unknown_one_is_searched_dense() -> None:
    from embedding.errors import InvalidInputError
    from retrieval.search import SearchService

    text = ["Owls hunt mice at night. " * 40]  # long: the average length shows
    first = Bm25Encoder(AVG256_SCHEME).documents(text)[0]
    assert first.indices == Bm25Encoder(ENGLISH_ONLY_SCHEME).documents(text)[0].indices
    assert first.values != Bm25Encoder(ENGLISH_ONLY_SCHEME).documents(text)[0].values
    hybrid = SearchPlan("hybrid")  # a collection with BM25 vectors is searched hybrid
    for scheme in (AVG256_SCHEME, ENGLISH_ONLY_SCHEME, BM25_SCHEME):
        service = SearchService(None, None, "", sparse=scheme, defaults=hybrid)  # type: ignore[arg-type]
        assert service.plan().mode == "hybrid"
    future = SearchService(None, None, "", sparse="qdrant-bm25/a-newer-one", defaults=hybrid)  # type: ignore[arg-type]
    assert future.plan().mode == "dense"
    with pytest.raises(InvalidInputError, match="backfill-sparse"):
        future.plan("hybrid")
