"""What each collection holds: sizes and recipe (for `quarry stats` and `/v1/collections`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from retrieval.document_pages import DocumentQuery
from retrieval.protocol import VectorStore


@dataclass(frozen=True)
class CollectionSummary:
    name: str
    documents: int
    chunks: int
    recipe: dict[str, Any] | None


def summarize_collections(store: VectorStore) -> list[CollectionSummary]:
    summaries = []
    for name in store.collections():
        recipe = store.recipe(name)
        summaries.append(
            CollectionSummary(
                name=name,
                documents=store.document_page(name, DocumentQuery(limit=1)).total,
                chunks=store.count(name),
                recipe=recipe.to_dict() if recipe else None,
            )
        )
    return summaries
