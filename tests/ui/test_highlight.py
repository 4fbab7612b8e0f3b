"""Query words are marked in results, and the chunk's own text can never inject HTML."""

from __future__ import annotations

from ui.highlight import highlight, query_terms


def test_marks_query_words_and_their_forms() -> None:
    marked = highlight("Owls hunt mice; the hunter hunts at night.", "hunting owls")
    assert marked.count("<mark>") == 4 and "<mark>Owls</mark>" in marked
    assert "<mark>the</mark>" not in highlight("the owl", "the owl")  # stopwords stay plain
    assert query_terms("What is a B?") == []


def test_text_is_escaped_before_marking() -> None:
    marked = highlight("<script>alert('owl')</script> owl", "owl")
    assert "<script>" not in marked and "&lt;script&gt;" in marked
    assert marked.endswith("<mark>owl</mark>")
