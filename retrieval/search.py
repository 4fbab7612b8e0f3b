"""Query-instructed search: dense (cached query embedding), sparse (BM25) or both fused."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from embedding.errors import InvalidInputError
from embedding.languages import query_language, reads
from embedding.protocol import Embedder
from embedding.rerankers import Reranker
from retrieval.models import DenseVectors, SearchHit, SearchMode, SearchPlan
from retrieval.protocol import Filters, VectorStore
from retrieval.sparse import BM25_SCHEME, SCHEMES, SparseVec, encoder

MAX_TOP_K = 1000
MODES: tuple[SearchMode, ...] = ("dense", "sparse", "hybrid")
VECTORS: tuple[DenseVectors, ...] = ("full", "small", "two-stage")


@dataclass
class SearchResult:
    hits: list[SearchHit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    instruction: str = ""
    mode: str = "dense"
    language: str | None = None  # the query's, when it decided the fusion
    weights: tuple[float, float] | None = None  # [dense, sparse] when not equal
    note: str | None = None  # why the search was run as it was


class SearchService:
    """Embeds queries with the collection's instruction (or an override) and searches.

    A collection with sparse vectors is searched `hybrid` unless a request says otherwise;
    one without them only `dense`.
    """

    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        default_instruction: str,
        *,
        sparse: str = "",
        defaults: SearchPlan = SearchPlan(),  # noqa: B008 - frozen, never mutated
        reranker: Callable[[], Reranker] | None = None,
        rerank_top_n: int = 50,
        languages: frozenset[str] | None = None,
    ) -> None:
        self.embedder = embedder
        self.languages = languages  # what the dense model reads (None: every language)
        self.store = store
        self.default_instruction = default_instruction
        # The collection's BM25 scheme ("" = none): queries are read as its chunks were. One
        # this version does not know (a newer Quarry's) is searched dense until rebuilt.
        self.unknown_scheme = sparse if sparse and sparse not in SCHEMES else ""
        self.has_sparse = bool(sparse) and not self.unknown_scheme
        self.defaults = defaults if self.has_sparse else replace(defaults, mode="dense")
        self._reranker = reranker
        self.rerank_top_n = rerank_top_n
        self._bm25 = encoder(sparse if self.has_sparse else BM25_SCHEME)  # (shared)

    def plan(
        self,
        mode: str | None = None,
        rrf_k: int | None = None,
        weights: tuple[float, float] | None = None,
        vectors: str | None = None,
    ) -> SearchPlan:
        """The request's plan: its own choices over the collection's defaults.

        Raises:
            InvalidInputError: an unknown mode, or a sparse one on a dense-only collection.
        """
        chosen = mode or self.defaults.mode
        if chosen not in MODES:
            raise InvalidInputError(
                f"mode: {chosen!r} is not one of {', '.join(MODES)}", detail={"field": "mode"}
            )
        if chosen != "dense" and not self.has_sparse:
            why = (
                f"are in a scheme this version does not know ({self.unknown_scheme})"
                if self.unknown_scheme
                else "are missing (built before they existed)"
            )
            raise InvalidInputError(
                f"mode: {chosen!r} needs the collection's BM25 vectors, which {why}: run "
                "`quarry backfill-sparse` on it first",
                detail={"field": "mode"},
            )
        dense = vectors or self.defaults.vectors
        if dense not in VECTORS:
            raise InvalidInputError(
                f"vectors: {dense!r} is not one of {', '.join(VECTORS)}",
                detail={"field": "vectors"},
            )
        if dense != "full" and self.defaults.vectors == "full":
            raise InvalidInputError(
                f"vectors: {dense!r} needs a small vector, and the collection stores none "
                "(QUARRY_SMALL_DIM was not set when it was created)",
                detail={"field": "vectors"},
            )
        return replace(
            self.defaults,
            mode=chosen,
            rrf_k=rrf_k or self.defaults.rrf_k,
            weights=weights,
            vectors=dense,
        )

    def search_many(
        self,
        collection: str,
        queries: Sequence[str],
        *,
        top_k: int = 10,
        filters: Filters | None = None,
        instruction: str | None = None,
        score_threshold: float | None = None,
        plan: SearchPlan | None = None,
        rerank: bool = False,
        rerank_top_n: int | None = None,
        profile: bool = False,
    ) -> list[SearchResult]:
        """Search several queries at once (one model batch, one store batch).

        With `rerank`, the best `rerank_top_n` candidates (at least `top_k`) are scored
        again by the reranker and the top `top_k` of them returned, with its scores.
        With `profile`, a hybrid search also runs each prefetch alone to time it; the
        fusion's own share is what the fused query took beyond them.
        """
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInputError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        for position, query in enumerate(queries):
            if not query or not query.strip():
                raise InvalidInputError(
                    f"query #{position + 1} is empty", detail={"field": "query"}
                )
        plan = plan or self.plan()
        if plan.mode == "hybrid" and self.languages is not None:
            split = self._by_language(queries)
            if split is not None:
                return self._search_split(
                    split,
                    collection,
                    queries,
                    top_k=top_k,
                    filters=filters,
                    instruction=instruction,
                    score_threshold=score_threshold,
                    plan=plan,
                    rerank=rerank,
                    rerank_top_n=rerank_top_n,
                    profile=profile,
                )
        instruction = instruction or self.default_instruction
        reranker = self._rerank_model() if rerank else None
        depth = max(top_k, rerank_top_n or self.rerank_top_n) if reranker else top_k
        timings: dict[str, float] = {"batch_size": float(len(queries))}
        vectors: np.ndarray | None = None
        if plan.mode != "sparse":
            started = time.perf_counter()
            vectors = self.embedder.embed_queries(list(queries), instruction)
            timings["embed_ms"] = (time.perf_counter() - started) * 1000
        sparse = None
        if plan.mode != "dense":
            started = time.perf_counter()
            sparse = self._bm25.queries(list(queries))
            timings["sparse_encode_ms"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        hits = self.store.search(
            collection, vectors, depth, filters, score_threshold, sparse=sparse, plan=plan
        )
        # One Query API call runs the prefetches and the fusion together, in the store.
        timings["search_ms"] = (time.perf_counter() - started) * 1000
        if profile and plan.mode == "hybrid":
            timings |= self._profile(collection, vectors, sparse, plan, depth, filters, timings)
        if reranker is not None:
            started = time.perf_counter()
            hits = [
                _reranked(reranker, query, row, instruction, top_k)
                for query, row in zip(queries, hits, strict=True)
            ]
            timings["rerank_ms"] = (time.perf_counter() - started) * 1000
        # Stages run once for the whole batch: each query waited for all of it.
        return [SearchResult(row, dict(timings), instruction, plan.mode) for row in hits]

    def _by_language(self, queries: Sequence[str]) -> dict[int, str] | None:
        """The queries (index -> language) the dense model cannot read, or None."""
        found = {i: query_language(q) for i, q in enumerate(queries)}
        unread = {i: lang for i, lang in found.items() if not reads(self.languages, lang)}
        return unread or None

    def _search_split(
        self,
        unread: dict[int, str],
        collection: str,
        queries: Sequence[str],
        *,
        plan: SearchPlan,
        **options: Any,
    ) -> list[SearchResult]:
        """Hybrid, leaning on BM25 where the dense model does not read the query's
        language: those queries are searched by BM25 alone (fusing noise at any weight
        only pushes the right passages down), the rest hybrid as asked."""
        read = [i for i in range(len(queries)) if i not in unread]
        results: dict[int, SearchResult] = {}
        if read:
            rows = self.search_many(collection, [queries[i] for i in read], plan=plan, **options)
            results |= dict(zip(read, rows, strict=True))
        lonely = list(unread)
        rows = self.search_many(
            collection, [queries[i] for i in lonely], plan=replace(plan, mode="sparse"), **options
        )
        model = ", ".join(sorted(self.languages or ())) or "?"
        for i, row in zip(lonely, rows, strict=True):
            row.mode, row.language, row.weights = "hybrid", unread[i], (0.0, 1.0)
            row.note = (
                f"the query is in {unread[i]!r}, which the dense model does not read "
                f"(it reads {model}): BM25 alone ranked it"
            )
            results[i] = row
        return [results[i] for i in range(len(queries))]

    def _profile(
        self,
        collection: str,
        vectors: np.ndarray | None,
        sparse: list[SparseVec] | None,
        plan: SearchPlan,
        depth: int,
        filters: Filters | None,
        timings: dict[str, float],
    ) -> dict[str, float]:
        """Each prefetch of a hybrid search, run alone at the prefetch's depth, timed."""
        alone = max(plan.candidates, depth)
        out: dict[str, float] = {}
        stages: tuple[tuple[str, SearchMode], ...] = (
            ("prefetch_dense_ms", "dense"),
            ("prefetch_sparse_ms", "sparse"),
        )
        for name, mode in stages:
            started = time.perf_counter()
            self.store.search(
                collection, vectors, alone, filters, sparse=sparse, plan=replace(plan, mode=mode)
            )
            out[name] = (time.perf_counter() - started) * 1000
        out["fusion_ms"] = max(timings["search_ms"] - sum(out.values()), 0.0)
        return out

    def _rerank_model(self) -> Reranker:
        if self._reranker is None:
            raise InvalidInputError("rerank: no reranker is configured", detail={"field": "rerank"})
        return self._reranker()

    def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int = 10,
        filters: Filters | None = None,
        instruction: str | None = None,
        score_threshold: float | None = None,
        plan: SearchPlan | None = None,
        rerank: bool = False,
        rerank_top_n: int | None = None,
        profile: bool = False,
    ) -> SearchResult:
        return self.search_many(
            collection,
            [query],
            top_k=top_k,
            filters=filters,
            instruction=instruction,
            score_threshold=score_threshold,
            plan=plan,
            rerank=rerank,
            rerank_top_n=rerank_top_n,
            profile=profile,
        )[0]


def _reranked(
    reranker: Reranker, query: str, hits: list[SearchHit], instruction: str, top_k: int
) -> list[SearchHit]:
    """The candidates in the reranker's order, carrying its scores; the best `top_k`."""
    scores = reranker.rerank(query, [hit.text for hit in hits], instruction)
    ranked = sorted(zip(scores, hits, strict=True), key=lambda pair: -pair[0])
    return [replace(hit, score=score) for score, hit in ranked[:top_k]]
