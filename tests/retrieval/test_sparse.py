"""BM25 tokenisation that holds for the languages Quarry ingests, not whitespace alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.edge_store import EdgeStore
from retrieval.models import ChunkRecord, CollectionRecipe, SearchPlan, chunk_id
from retrieval.sparse import BM25_SCHEME, Bm25Encoder

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
