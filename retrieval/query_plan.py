"""One search as a tree of Query API stages, the same for every store.

A store only translates the tree into its client's types: a nearest search on one named
vector, or prefetches fused by reciprocal rank fusion, each stage with its own depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np

from retrieval.models import SMALL_VECTOR, CollectionRecipe, SearchPlan, small_of
from retrieval.sparse import SPARSE_VECTOR, SparseVec

T = TypeVar("T")


@dataclass(frozen=True)
class Nearest:
    using: str  # the vector's name ("" = the unnamed dense vector)
    vector: list[float] | SparseVec


@dataclass(frozen=True)
class Rrf:
    k: int
    weights: list[float] | None


@dataclass(frozen=True)
class Stage:
    query: Nearest | Rrf
    limit: int
    prefetch: tuple[Stage, ...] = ()
    threshold: float | None = None  # cosine similarity floor, on dense stages only


def build(
    recipe: CollectionRecipe,
    plan: SearchPlan,
    dense: np.ndarray | None,
    sparse: SparseVec | None,
    limit: int,
    threshold: float | None,
) -> Stage | None:
    """The stages for one query; None when it cannot match anything (stop words only)."""
    depth = max(plan.candidates, limit)
    if plan.mode == "sparse":
        if not sparse:
            return None
        return Stage(Nearest(SPARSE_VECTOR, sparse), limit)
    assert dense is not None
    dense_stage = _dense(recipe, plan, dense, limit if plan.mode == "dense" else depth, threshold)
    if plan.mode == "dense":
        return dense_stage
    stages = [dense_stage]
    if sparse:  # a query of stop words only has no terms to match
        stages.append(Stage(Nearest(SPARSE_VECTOR, sparse), depth))
    weights = list(plan.weights)[: len(stages)] if plan.weights else None
    return Stage(Rrf(plan.rrf_k, weights), limit, tuple(stages))


def _dense(
    recipe: CollectionRecipe,
    plan: SearchPlan,
    dense: np.ndarray,
    limit: int,
    threshold: float | None,
) -> Stage:
    """The full vector, the small one, or the small one's candidates rescored on the full."""
    full = Nearest(recipe.dense_vector, _floats(dense))
    vectors = plan.vectors if recipe.small_dim else "full"
    if vectors == "full":
        return Stage(full, limit, threshold=threshold)
    small = Nearest(SMALL_VECTOR, _floats(small_of(dense, recipe.small_dim)))
    if vectors == "small":
        return Stage(small, limit, threshold=threshold)
    candidates = Stage(small, max(plan.candidates, limit * plan.oversampling))
    return Stage(full, limit, (candidates,), threshold=threshold)


def point_vectors(
    recipe: CollectionRecipe, vector: np.ndarray, sparse: SparseVec | None
) -> list[float] | dict[str, list[float] | SparseVec]:
    """A point's vectors as the collection lays them out (a plain list when it has one)."""
    full = _floats(vector)
    if not (recipe.small_dim or recipe.sparse):
        return full
    named: dict[str, list[float] | SparseVec] = {recipe.dense_vector: full}
    if recipe.small_dim:
        named[SMALL_VECTOR] = _floats(small_of(vector, recipe.small_dim))
    if recipe.sparse and sparse is not None:
        named[SPARSE_VECTOR] = sparse
    return named


def full_vector(recipe: CollectionRecipe, stored: object) -> np.ndarray:
    """A stored point's full dense vector, however the client returns it."""
    if isinstance(stored, dict):
        stored = stored[recipe.dense_vector]
    return np.asarray(stored, dtype=np.float32)


def build_all(
    recipe: CollectionRecipe,
    plan: SearchPlan,
    dense: np.ndarray | None,
    sparse: Sequence[SparseVec] | None,
    limit: int,
    threshold: float | None,
) -> list[Stage | None]:
    """The stages of each query in a batch (dense rows, sparse vectors, or both)."""
    count = len(dense) if dense is not None else len(sparse or [])
    return [
        build(
            recipe,
            plan,
            dense[i] if dense is not None else None,
            sparse[i] if sparse is not None else None,
            limit,
            threshold,
        )
        for i in range(count)
    ]


def regroup(stages: Sequence[Stage | None], answers: Sequence[list[T]]) -> list[list[T]]:
    """The store's answers to the queries it was sent, and nothing for those it was not."""
    given = iter(answers)
    return [next(given) if stage is not None else [] for stage in stages]


def _floats(vector: np.ndarray) -> list[float]:
    """A vector as the store's clients take it (typed: numpy's stubs differ by version)."""
    return cast("list[float]", vector.astype(np.float32).tolist())
