"""Hybrid search that knows what the dense model reads: BM25 alone for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.resources import Resources
from embedding.languages import model_languages, query_language, reads
from ingest.sources import TextSource

PASSAGES = [
    "القاهرة هي عاصمة مصر وأكبر مدنها، ويمر بها نهر النيل.",
    "تقع مكة المكرمة في غرب المملكة العربية السعودية ويزورها الحجاج كل عام.",
    "الزيتون شجرة معمرة تزرع في حوض البحر الأبيض المتوسط ويستخرج منها الزيت.",
    "الجمل حيوان صحراوي يستطيع أن يعيش أياما طويلة بلا ماء.",
    "اخترع الخوارزمي علم الجبر وكتب كتابا مشهورا في الحساب.",
    "Owls hunt voles at night, hearing them move under the snow.",
    "Green tea is steeped at eighty degrees for two minutes.",
]
QUESTIONS = [
    ("ما هي عاصمة مصر؟", 0),
    ("أين يعيش الجمل بلا ماء؟", 3),
    ("من اخترع علم الجبر؟", 4),
    ("ما الذي يستخرج من شجرة الزيتون؟", 2),
]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("ما هي عاصمة فرنسا؟", "ar"),
        ("东京是日本的首都吗", "zh"),
        ("日本の首都はどこですか", "ja"),
        ("한국의 수도는 어디입니까", "ko"),
        ("Какая столица России?", "ru"),
        ("भारत की राजधानी क्या है", "hi"),
        ("Wie hoch ist der Eiffelturm in Paris?", "de"),
        ("how tall is the eiffel tower", "en"),
        ("AZT", "en"),
    ],
)
def test_a_querys_language_is_read_from_its_script_or_words(text: str, language: str) -> None:
    assert query_language(text) == language


def test_the_models_languages_come_from_its_card(tmp_path: Path, minilm_path: str) -> None:
    assert model_languages("anything", Path(minilm_path)) == frozenset({"en"})
    (tmp_path / "README.md").write_text("---\nlanguage:\n- de\n- fr\n---\n# A model\n")
    assert model_languages("x", tmp_path) == frozenset({"de", "fr"})
    assert model_languages("Qwen/Qwen3-Embedding-0.6B", tmp_path / "nowhere") is None
    assert not reads(frozenset({"en"}), "ar") and reads(None, "ar")


def test_hybrid_leans_on_bm25_for_a_language_the_model_cannot_read(
    resources: Resources,
) -> None:
    sources = [TextSource(f"p{i}.txt", text) for i, text in enumerate(PASSAGES)]
    assert resources.pipeline("ar").run(sources).ingested == len(PASSAGES)
    service = resources.search_service("ar")
    questions = [q for q, _ in QUESTIONS]
    sparse = service.search_many("ar", questions, top_k=5, plan=service.plan("sparse"))
    hybrid = service.search_many("ar", questions, top_k=5, plan=service.plan("hybrid"))
    for (question, expected), alone, fused in zip(QUESTIONS, sparse, hybrid, strict=True):
        assert [h.chunk_id for h in fused.hits] == [h.chunk_id for h in alone.hits], question
        assert fused.hits[0].source == f"p{expected}.txt", question
        assert fused.language == "ar" and fused.weights == (0.0, 1.0) and fused.note
        assert fused.mode == "hybrid"
    english = service.search("ar", "what do owls hunt at night?", top_k=3)
    assert english.mode == "hybrid" and english.language is None and english.weights is None
    assert english.hits[0].source == "p5.txt"
