"""Query-instructed semantic search: (cached) query embedding, then a filtered top-k."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from embedding.errors import InvalidInputError
from embedding.protocol import Embedder
from retrieval.models import SearchHit
from retrieval.protocol import Filters, VectorStore

MAX_TOP_K = 1000


@dataclass
class SearchResult:
    hits: list[SearchHit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    instruction: str = ""


class SearchService:
    """Embeds queries with the collection's instruction (or an override) and searches."""

    def __init__(self, embedder: Embedder, store: VectorStore, default_instruction: str) -> None:
        self.embedder = embedder
        self.store = store
        self.default_instruction = default_instruction

    def search_many(
        self,
        collection: str,
        queries: Sequence[str],
        *,
        top_k: int = 10,
        filters: Filters | None = None,
        instruction: str | None = None,
        score_threshold: float | None = None,
    ) -> list[SearchResult]:
        """Search several queries at once (one model batch, one store batch)."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInputError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        for position, query in enumerate(queries):
            if not query or not query.strip():
                raise InvalidInputError(
                    f"query #{position + 1} is empty", detail={"field": "query"}
                )
        started = time.perf_counter()
        instruction = instruction or self.default_instruction
        vectors = self.embedder.embed_queries(list(queries), instruction)
        embedded = time.perf_counter()
        hits = self.store.search(collection, vectors, top_k, filters, score_threshold)
        done = time.perf_counter()
        # Stages run once for the whole batch: each query waited for all of it.
        timings = {
            "embed_ms": (embedded - started) * 1000,
            "search_ms": (done - embedded) * 1000,
            "batch_size": float(len(queries)),
        }
        return [SearchResult(row, dict(timings), instruction) for row in hits]

    def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int = 10,
        filters: Filters | None = None,
        instruction: str | None = None,
        score_threshold: float | None = None,
    ) -> SearchResult:
        return self.search_many(
            collection,
            [query],
            top_k=top_k,
            filters=filters,
            instruction=instruction,
            score_threshold=score_threshold,
        )[0]
