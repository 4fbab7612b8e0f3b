"""What the store holds and returns: recipes, chunk records, hits, document summaries."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from embedding.errors import InvalidInputError
from retrieval.errors import CollectionMovedError, RecipeMismatchError
from retrieval.sparse import SparseVec, encoder

# Payload keys that sit at the top level; any other filter key is user metadata.
TOP_LEVEL_FIELDS = ("doc_id", "source")
HEAD_FIELDS = [
    "doc_id",
    "source",
    "chunk_count",
    "ingested_at",
    "meta",
    "file_type",
    "size_bytes",
    "seq",
]
INDEXED_FIELDS = ("doc_id", "source")
_CHUNK_NAMESPACE = uuid.UUID("6f1c1a52-8f0e-4bd4-9a52-7b7f0c0a9d11")


SIDE_MARK = "~"  # never in a user's collection name (the API's pattern refuses it)


def side_name(name: str, role: str) -> str:
    """A collection kept beside `name` (a migration's new one, the old one kept for a
    rollback): listed nowhere, backed up with nothing."""
    return f"{name}{SIDE_MARK}{role}"


def is_side(collection: str) -> bool:
    return SIDE_MARK in collection


def chunk_id(doc_id: str, index: int) -> str:
    """Deterministic point id: the same document and index always land on the same point."""
    return str(uuid.uuid5(_CHUNK_NAMESPACE, f"{doc_id}:{index}"))


def _unknown(value: object) -> bool:
    """A field an older collection did not record (a bool is always known)."""
    return value == "" or (type(value) is int and value == 0)


@dataclass(frozen=True)
class CollectionRecipe:
    """What a collection's vectors mean: everything that changes a document vector.

    `instruction` is the collection's default query instruction, not part of the identity:
    a query may use another, and changing the configured default never locks anyone out.
    Fields recorded as empty (collections from older versions) are not compared.
    """

    model: str
    dimension: int
    instruction: str
    revision: str = ""
    normalize: bool = True
    max_length: int = 0
    # The collection's layout, fixed when it is created (not part of the identity: an older
    # collection without sparse vectors keeps working dense-only, and can be backfilled).
    sparse: str = ""  # the BM25 scheme of its sparse vectors; "" = none
    small_dim: int = 0  # a Matryoshka prefix stored beside the full vector; 0 = none
    # Where a process finds the model when it is not the one it is configured with (a hub
    # id or a model folder; set by a migration): the collection is served with its own model.
    location: str = ""
    # What changes the vectors besides the model: an int8 engine ("onnx-int8"); "" = the
    # model's own fp32 vectors (torch, or an fp32 export that gives them). Always compared.
    engine: str = ""

    IDENTITY = ("model", "revision", "dimension", "normalize", "max_length")

    @property
    def dense_vector(self) -> str:
        """The full dense vector's name: unnamed, unless a small one sits beside it."""
        return "full" if self.small_dim else ""

    @property
    def vectors_key(self) -> str:
        """What a chunk's dense vector must have been made with to be stored here."""
        engine = f"#{self.engine}" if self.engine else ""
        return f"{self.model}@{self.revision}/{self.dimension}{engine}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionRecipe:
        return cls(
            model=str(data["model"]),
            dimension=int(data["dimension"]),
            instruction=str(data.get("instruction", "")),
            revision=str(data.get("revision") or ""),
            normalize=bool(data.get("normalize", True)),
            max_length=int(data.get("max_length") or 0),
            sparse=str(data.get("sparse") or ""),
            small_dim=int(data.get("small_dim") or 0),
            location=str(data.get("location") or ""),
            engine=str(data.get("engine") or ""),
        )

    def check(self, wanted: CollectionRecipe, collection: str) -> None:
        """Raise if `wanted` would make vectors this (the stored) recipe's cannot match."""
        diffs = {
            name: (getattr(self, name), getattr(wanted, name))
            for name in self.IDENTITY
            if getattr(self, name) != getattr(wanted, name)
            and not _unknown(getattr(self, name))
            and not _unknown(getattr(wanted, name))
        }
        if self.engine != wanted.engine:
            diffs["engine"] = (self.engine or "fp32", wanted.engine or "fp32")
        if diffs:
            said = "; ".join(
                f"{k}: collection has {a!r}, requested {b!r}" for k, (a, b) in diffs.items()
            )
            raise RecipeMismatchError(
                f"collection {collection!r} was built with another embedding recipe ({said}). "
                "Use the same model, revision, dimension, max length and QUARRY_QUANTIZE, or "
                "another collection (or move this one: quarry migrate).",
                detail={
                    "collection": collection,
                    "stored": self.to_dict(),
                    "requested": asdict(wanted),
                },
            )


@dataclass(frozen=True)
class ChunkRecord:
    """One point: its id, dense vector, BM25 term weights and payload."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any]
    sparse: SparseVec | None = None
    scheme: str = ""  # the BM25 scheme `sparse` is in ("": the collection's, whatever it is)
    vectors: str = ""  # the recipe's `vectors_key` `vector` was made for ("": unchecked)


def same_vectors(key: str, recipe: CollectionRecipe) -> bool:
    """Whether vectors made for `key` (a recipe's `vectors_key`) are `recipe`'s: the same
    model, width and engine, and the same revision where both know it (older collections and
    tokenizer-only setups record none)."""
    model, _, rest = key.rpartition("@")
    revision, _, tail = rest.rpartition("/")
    width, _, engine = tail.partition("#")
    if (model, width, engine) != (recipe.model, str(recipe.dimension), recipe.engine):
        return False
    return not (revision and recipe.revision) or revision == recipe.revision


def check_vectors(
    recipe: CollectionRecipe, records: Sequence[ChunkRecord], collection: str
) -> None:
    """Refuse vectors made for another recipe: a writer that started before the collection
    was moved to another model (a migration) tries again with the collection's model.

    Raises:
        CollectionMovedError: some record was embedded for another recipe.
    """
    stale = {r.vectors for r in records if r.vectors and not same_vectors(r.vectors, recipe)}
    if stale:
        raise CollectionMovedError(
            f"collection {collection!r} now holds vectors of {recipe.model!r} "
            f"({recipe.dimension} dimensions); these chunks were embedded for "
            f"{sorted(stale)[0]!r}: the file is embedded again with the collection's model",
            detail={"collection": collection, "model": recipe.model},
        )


def weighed_for(recipe: CollectionRecipe, records: Sequence[ChunkRecord]) -> list[ChunkRecord]:
    """`records` with BM25 weights in `recipe`'s scheme: weights missing, or computed in
    another scheme (a writer that read the recipe before a backfill moved it on), are
    computed again from the chunk's text."""
    if not recipe.sparse:
        return list(records)
    stale = [
        i for i, r in enumerate(records) if r.sparse is None or r.scheme not in ("", recipe.sparse)
    ]
    if not stale:
        return list(records)
    weights = encoder(recipe.sparse).documents(
        [str(records[i].payload.get("text", "")) for i in stale]
    )
    fresh = list(records)
    for i, w in zip(stale, weights, strict=True):
        fresh[i] = replace(fresh[i], sparse=w, scheme=recipe.sparse)
    return fresh


SearchMode = Literal["dense", "sparse", "hybrid"]
DenseVectors = Literal["full", "small", "two-stage"]
SMALL_VECTOR = "small"


def small_of(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The Matryoshka prefix of each vector, normalised again."""
    cut = np.asarray(vectors, dtype=np.float32)[..., :dim]
    norms = np.linalg.norm(cut, axis=-1, keepdims=True)
    return np.asarray(cut / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass(frozen=True)
class SearchPlan:
    """How to search: which vectors, and how their candidate lists are combined.

    `hybrid` runs the dense and the sparse search as prefetches of `candidates` each and
    fuses them with reciprocal rank fusion (`rrf_k`; `weights` = dense, sparse).
    """

    mode: SearchMode = "dense"
    candidates: int = 100
    rrf_k: int = 60
    weights: tuple[float, float] | None = None
    # With a small vector: search it alone, or take its candidates (`oversampling` times
    # the results, at least `candidates`) and rescore them on the full vector.
    vectors: DenseVectors = "full"
    oversampling: int = 4


DENSE = SearchPlan()


@dataclass(frozen=True)
class SearchHit:
    score: float
    chunk_id: str
    doc_id: str
    source: str
    page: int | None
    text: str
    chunk_index: int
    metadata: dict[str, Any] = field(default_factory=dict)
    ocr: bool = False  # the chunk's text was read from a scan or an image
    ocr_confidence: float | None = None  # OCR: its least sure page's mean word confidence

    @classmethod
    def from_payload(cls, point_id: object, score: float, payload: dict[str, Any]) -> SearchHit:
        return cls(
            score=float(score),
            chunk_id=str(point_id),
            doc_id=str(payload.get("doc_id", "")),
            source=str(payload.get("source", "")),
            page=payload.get("page"),
            text=str(payload.get("text", "")),
            chunk_index=int(payload.get("chunk_index", 0)),
            metadata=dict(payload.get("meta") or {}),
            ocr=bool(payload.get("ocr", False)),
            ocr_confidence=payload.get("ocr_confidence"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "doc_id": self.doc_id,
            "chunk_id": self.chunk_id,
            "source": self.source,
            "page": self.page,
            "text": self.text,
        }


@dataclass(frozen=True)
class DocumentInfo:
    doc_id: str
    source: str
    chunks: int
    expected_chunks: int
    ingested_at: str
    metadata: dict[str, Any]
    file_type: str = ""
    size_bytes: int = 0
    seq: int = 0  # the acknowledged version of its source (0: unversioned)

    @classmethod
    def from_head(cls, head: dict[str, Any], stored: int) -> DocumentInfo:
        """Summarise a document from its first chunk's payload and its stored chunk count."""
        return cls(
            doc_id=str(head.get("doc_id", "")),
            source=str(head.get("source", "")),
            chunks=int(stored),
            expected_chunks=int(head.get("chunk_count", stored)),
            ingested_at=str(head.get("ingested_at", "")),
            metadata=dict(head.get("meta") or {}),
            file_type=str(head.get("file_type", "")),
            size_bytes=int(head.get("size_bytes", 0)),
            seq=int(head.get("seq") or 0),
        )

    @property
    def complete(self) -> bool:
        return self.chunks == self.expected_chunks

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"complete": self.complete}


_FILTER_KEY = re.compile(r"^[\w-]{1,64}$")


def payload_key(filter_key: str) -> str:
    """Where a filter key lives in the payload: top level or under user metadata.

    Raises:
        InvalidInputError: the key cannot name a payload field (letters, digits, `_`, `-`).
    """
    if not _FILTER_KEY.match(filter_key):
        raise InvalidInputError(
            f"filters: {filter_key[:80]!r} is not a filterable key (letters, digits, '_' "
            "and '-', at most 64)",
            detail={"field": "filters", "key": filter_key[:80]},
        )
    return filter_key if filter_key in TOP_LEVEL_FIELDS else f"meta.{filter_key}"
