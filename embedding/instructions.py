"""Query instructions: the one place that decides how a query is phrased for the model."""

from __future__ import annotations

DEFAULT_QUERY_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)

PRESETS: dict[str, str] = {
    "web_search": DEFAULT_QUERY_INSTRUCTION,
    "question_answering": "Given a question, retrieve passages that answer the question",
    "scientific_claim": (
        "Given a scientific claim, retrieve documents that support or refute the claim"
    ),
    "code": "Given a code search query, retrieve code snippets and documentation that match it",
}


def format_query(instruction: str | None, query: str) -> str:
    """Phrase a query the way Qwen3-Embedding was trained: no space after `Query:`."""
    if not instruction:
        return query
    return f"Instruct: {instruction}\nQuery:{query}"
