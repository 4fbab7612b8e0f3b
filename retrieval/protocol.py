"""The `VectorStore` protocol every backend satisfies (contract-tested)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from retrieval.document_pages import DocumentPage, DocumentQuery
from retrieval.models import (
    DENSE,
    ChunkRecord,
    CollectionRecipe,
    DocumentInfo,
    SearchHit,
    SearchPlan,
)
from retrieval.sparse import SparseVec

Filters = Mapping[str, Any]
SparseEncoder = Callable[[list[str]], list[SparseVec]]


class IngestStore(Protocol):
    """What ingestion needs of a store: every `VectorStore`, and `OwnerStore` (a worker
    handing batches to the process that owns the embedded store)."""

    def recipe(self, collection: str) -> CollectionRecipe | None: ...

    def ensure_collection(self, collection: str, recipe: CollectionRecipe) -> None: ...

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> None: ...

    def document(self, collection: str, doc_id: str) -> DocumentInfo | None: ...

    def prune_source(
        self, collection: str, source: str, keep_doc_id: str, keep_chunks: int, seq: int = 0
    ) -> int: ...

    def newer_version(self, collection: str, source: str, doc_id: str, seq: int) -> bool: ...

    def stamp_version(self, collection: str, doc_id: str, seq: int) -> None: ...

    def delete_document(self, collection: str, doc_id: str) -> int: ...

    def optimize(self, collection: str) -> None: ...

    def close(self) -> None: ...


class VectorStore(Protocol):
    """Collections of chunk vectors with payloads, searchable with payload filters."""

    writers_elsewhere: bool  # writes come from other processes too (`holding_writes` is moot)

    def recipe(self, collection: str) -> CollectionRecipe | None: ...

    def ensure_collection(self, collection: str, recipe: CollectionRecipe) -> None:
        """Create the collection, or check that it was built with `recipe`."""
        ...

    def collections(self) -> list[str]: ...

    def drop_collection(self, collection: str) -> None: ...

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> None: ...

    def document(self, collection: str, doc_id: str) -> DocumentInfo | None: ...

    def documents(self, collection: str) -> list[DocumentInfo]: ...

    def document_page(self, collection: str, query: DocumentQuery) -> DocumentPage:
        """One page of `documents`, in (source, doc_id) order, found in the store."""
        ...

    def chunks(self, collection: str, doc_id: str) -> list[SearchHit]:
        """A document's stored chunks in order (score 0: nothing was searched)."""
        ...

    def delete_document(self, collection: str, doc_id: str) -> int: ...

    def prune_source(
        self, collection: str, source: str, keep_doc_id: str, keep_chunks: int, seq: int = 0
    ) -> int:
        """Keep only chunks 0..keep_chunks-1 of `keep_doc_id` for `source`: remove the chunks
        of its other versions (other document ids; with `seq`, only those older than it)
        and stale chunks past the new count."""
        ...

    def newer_version(self, collection: str, source: str, doc_id: str, seq: int) -> bool:
        """Whether a version of `source` newer than `seq` (another document) is stored."""
        ...

    def stamp_version(self, collection: str, doc_id: str, seq: int) -> None:
        """Mark a stored document as version `seq` of its source (an unchanged re-upload)."""
        ...

    def count(self, collection: str, filters: Filters | None = None) -> int: ...

    def search(
        self,
        collection: str,
        vectors: np.ndarray | None,
        limit: int,
        filters: Filters | None = None,
        score_threshold: float | None = None,
        *,
        sparse: Sequence[SparseVec] | None = None,
        plan: SearchPlan = DENSE,
    ) -> list[list[SearchHit]]:
        """One hit list per query, best first: dense `vectors`, `sparse` term weights or
        both, as `plan` says (a hybrid query's scores are fused ranks, not similarities)."""
        ...

    def add_sparse(self, collection: str, scheme: str, encode: SparseEncoder) -> int:
        """Give a collection without sparse vectors BM25 vectors computed by `encode` from
        its stored chunk text; returns the points updated (0 when it has them already)."""
        ...

    def chunk_payloads(self, collection: str, doc_id: str) -> list[tuple[str, dict[str, Any]]]:
        """A document's chunks' ids and whole payloads, in chunk order."""
        ...

    def holding_writes(self, collection: str) -> AbstractContextManager[None]:
        """Writes to `collection` made meanwhile by this process wait (reads do not)."""
        ...

    def swap(self, name: str, incoming: str, outgoing: str) -> None:
        """Make `incoming`'s points `name`'s and keep `name`'s old ones as `outgoing`
        (replaced if it exists), atomically for every reader and writer."""
        ...

    def optimize(self, collection: str) -> None: ...

    def close(self) -> None: ...
