"""The `VectorStore` protocol every backend satisfies (contract-tested)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from retrieval.models import ChunkRecord, CollectionRecipe, DocumentInfo, SearchHit

Filters = Mapping[str, Any]


class VectorStore(Protocol):
    """Collections of chunk vectors with payloads, searchable with payload filters."""

    def recipe(self, collection: str) -> CollectionRecipe | None: ...

    def ensure_collection(self, collection: str, recipe: CollectionRecipe) -> None:
        """Create the collection, or check that it was built with `recipe`."""
        ...

    def collections(self) -> list[str]: ...

    def drop_collection(self, collection: str) -> None: ...

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> None: ...

    def document(self, collection: str, doc_id: str) -> DocumentInfo | None: ...

    def documents(self, collection: str) -> list[DocumentInfo]: ...

    def chunks(self, collection: str, doc_id: str) -> list[SearchHit]:
        """A document's stored chunks in order (score 0: nothing was searched)."""
        ...

    def delete_document(self, collection: str, doc_id: str) -> int: ...

    def prune_source(self, collection: str, source: str, keep_doc_id: str, keep_chunks: int) -> int:
        """Keep only chunks 0..keep_chunks-1 of `keep_doc_id` for `source`: remove the chunks
        of its other versions (other document ids) and stale chunks past the new count."""
        ...

    def count(self, collection: str, filters: Filters | None = None) -> int: ...

    def search(
        self,
        collection: str,
        vectors: np.ndarray,
        limit: int,
        filters: Filters | None = None,
        score_threshold: float | None = None,
    ) -> list[list[SearchHit]]:
        """One hit list per query vector, best first."""
        ...

    def optimize(self, collection: str) -> None: ...

    def close(self) -> None: ...
