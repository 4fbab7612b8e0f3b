"""A Qdrant server through qdrant-client (its local mode stands in for the server in tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from retrieval.document_pages import (
    EVERY_DOCUMENT,
    FACET_ALL,
    DocumentPage,
    DocumentQuery,
    metadata_matches,
    page_of,
    window,
)
from retrieval.errors import NotFoundError, StoreRejectedError, StoreUnavailableError
from retrieval.models import (
    DENSE,
    HEAD_FIELDS,
    INDEXED_FIELDS,
    SMALL_VECTOR,
    ChunkRecord,
    CollectionRecipe,
    DocumentInfo,
    SearchHit,
    SearchPlan,
    check_vectors,
    chunk_id,
    is_side,
    payload_key,
    weighed_for,
)
from retrieval.protocol import Filters, SparseEncoder
from retrieval.qdrant_rebuild import Layout, Rebuild, generation_of, is_internal, physical
from retrieval.query_plan import (
    Nearest,
    Rrf,
    Stage,
    build_all,
    point_vectors,
    regroup,
)
from retrieval.sparse import SPARSE_VECTOR, SparseVec

_RECIPE_KEY = "quarry_recipe"


def _filter(filters: Filters | None) -> models.Filter | None:
    must: list[Any] = []
    for key, value in (filters or {}).items():
        values = value if isinstance(value, list) else [value]
        match: Any = (
            models.MatchAny(any=values) if len(values) > 1 else models.MatchValue(value=values[0])
        )
        must.append(models.FieldCondition(key=payload_key(key), match=match))
    return models.Filter(must=must) if must else None


def _source_condition(source: str) -> models.FieldCondition:
    return models.FieldCondition(key="source", match=models.MatchValue(value=source))


def _doc_condition(doc_id: str) -> models.FieldCondition:
    return models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))


def _sparse(vector: SparseVec) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


def _vector(value: list[float] | SparseVec) -> Any:
    return _sparse(value) if isinstance(value, SparseVec) else value


def _facet_value(key: str, value: object) -> str:
    """A facet's value as stored: qdrant-client's local mode hands a document id (32 hex
    digits) back as a UUID with dashes, which then matches no document."""
    text = str(value)
    if key == "doc_id" and len(text) == 36 and text.count("-") == 4:
        return text.replace("-", "")
    return text


def _drop_alias(alias: str) -> models.DeleteAliasOperation:
    return models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))


def _make_alias(alias: str, collection: str) -> models.CreateAliasOperation:
    return models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)
    )


def _point(recipe: CollectionRecipe, record: ChunkRecord) -> models.PointStruct:
    vectors = point_vectors(recipe, record.vector, record.sparse)
    laid_out: Any = (
        {name: _vector(value) for name, value in vectors.items()}
        if isinstance(vectors, dict)
        else vectors
    )
    return models.PointStruct(id=record.id, vector=laid_out, payload=record.payload)


def _server_query(query: Nearest | Rrf) -> tuple[Any, str | None]:
    """The query and the vector it uses (None: the unnamed one, or a fusion)."""
    if isinstance(query, Rrf):
        return models.RrfQuery(rrf=models.Rrf(k=query.k, weights=query.weights)), None
    return _vector(query.vector), query.using or None


def _stage_fields(
    stage: Stage, flt: models.Filter | None, params: models.SearchParams | None
) -> dict[str, Any]:
    """What a prefetch and the top request of a plan both say about their stage."""
    query, using = _server_query(stage.query)
    return {
        "query": query,
        "using": using,
        "limit": stage.limit,
        "prefetch": [_prefetch(p, flt, params) for p in stage.prefetch] or None,
        "filter": flt,
        "params": params if isinstance(stage.query, Nearest) else None,
        "score_threshold": stage.threshold,
    }


def _prefetch(
    stage: Stage, flt: models.Filter | None, params: models.SearchParams | None
) -> models.Prefetch:
    return models.Prefetch(**_stage_fields(stage, flt, params))


def _request(
    stage: Stage, flt: models.Filter | None, params: models.SearchParams | None
) -> models.QueryRequest:
    return models.QueryRequest(**_stage_fields(stage, flt, params), with_payload=True)


# The Qdrant server features this store uses, with the first release that has each; the
# images pinned in compose.yaml and deploy/ are checked against it by the test suite.
SERVER_FEATURES: dict[str, tuple[int, int]] = {
    "collection_exists": (1, 8),
    "query_batch_points": (1, 10),  # the universal Query API
    "metadata=": (1, 16),  # collection metadata: the recipe lives with the collection
    "HasIdCondition": (1, 0),
    "FilterSelector": (1, 0),
    "create_payload_index": (1, 0),
    "facet": (1, 12),  # counts per value of an indexed field (the document list's pages)
    "ScalarQuantization": (1, 1),  # int8, with rescore and oversampling at query time
    "write_consistency_factor": (1, 0),
    "is_tenant": (1, 11),  # a keyword index that co-locates each tenant's points
    "SparseVectorParams": (1, 10),  # with the IDF modifier: BM25 scored by the server
    "RrfQuery": (1, 17),  # reciprocal rank fusion with k and per-prefetch weights
}


@dataclass(frozen=True)
class QdrantOptions:
    """How a new collection is laid out on a Qdrant server or cluster.

    The defaults suit one node. On a cluster: `shard_number` a multiple of the nodes,
    `replication_factor` 2 or more, `write_consistency_factor` up to it; `on_disk` keeps
    vectors (and payloads) on disk with int8 `quantization` in RAM, searched with
    `oversampling` and re-scored with the full vectors.
    """

    shard_number: int = 1
    replication_factor: int = 1
    write_consistency_factor: int = 1
    on_disk: bool = False
    quantization: Literal["none", "int8"] = "none"
    rescore: bool = True
    oversampling: float = 2.0
    tenant_key: str | None = None

    def collection_params(self, recipe: CollectionRecipe) -> dict[str, Any]:
        """`create_collection` arguments (the REST API's `CreateCollection` body)."""
        full = models.VectorParams(
            size=recipe.dimension, distance=models.Distance.COSINE, on_disk=self.on_disk
        )
        vectors: models.VectorParams | dict[str, models.VectorParams] = full
        if recipe.small_dim:  # the prefix searched first, int8 in RAM
            small = models.VectorParams(
                size=recipe.small_dim,
                distance=models.Distance.COSINE,
                quantization_config=models.ScalarQuantization(
                    scalar=models.ScalarQuantizationConfig(
                        type=models.ScalarType.INT8, quantile=0.99, always_ram=True
                    )
                ),
            )
            vectors = {recipe.dense_vector: full, SMALL_VECTOR: small}
        params: dict[str, Any] = {
            "vectors_config": vectors,
            "shard_number": self.shard_number,
            "replication_factor": self.replication_factor,
            "write_consistency_factor": self.write_consistency_factor,
            "on_disk_payload": self.on_disk,
        }
        if recipe.sparse:
            params["sparse_vectors_config"] = {
                SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
            }
        if self.quantization == "int8":
            params["quantization_config"] = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(
                    type=models.ScalarType.INT8, quantile=0.99, always_ram=True
                )
            )
        return params

    def search_params(self) -> models.SearchParams | None:
        if self.quantization == "none":
            return None
        return models.SearchParams(
            quantization=models.QuantizationSearchParams(
                rescore=self.rescore, oversampling=self.oversampling
            )
        )

    def payload_indexes(self) -> dict[str, models.PayloadSchemaType | models.KeywordIndexParams]:
        """Keyword indexes on the fields Quarry filters on, and the tenant key if any."""
        indexes: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = dict.fromkeys(
            INDEXED_FIELDS, models.PayloadSchemaType.KEYWORD
        )
        if self.tenant_key:
            indexes[payload_key(self.tenant_key)] = models.KeywordIndexParams(
                type=models.KeywordIndexType.KEYWORD, is_tenant=True
            )
        return indexes


def minimum_server() -> tuple[int, int]:
    """The oldest Qdrant server release that has every feature in `SERVER_FEATURES`."""
    return max(SERVER_FEATURES.values())


class QdrantServerStore:
    """The recipe is kept in the collection's own metadata, so every client sees it."""

    writers_elsewhere = True  # other processes write too: a write hold cannot cover them

    def __init__(self, client: QdrantClient, options: QdrantOptions | None = None) -> None:
        self.client = client
        self.options = options or QdrantOptions()
        self._lock = threading.RLock()
        self.layout = Layout(client, self._call)

    @classmethod
    def connect(
        cls, url: str, api_key: str | None = None, options: QdrantOptions | None = None
    ) -> QdrantServerStore:
        return cls(QdrantClient(url=url, api_key=api_key, timeout=30), options)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (NotFoundError, ValueError):
            raise
        except UnexpectedResponse as exc:
            if 400 <= (exc.status_code or 0) < 500:  # refused: waiting will not help
                raise StoreRejectedError(
                    f"Qdrant refused the {what} ({exc.status_code}): {exc}"
                ) from exc
            raise StoreUnavailableError(f"Qdrant {what} failed: {exc}") from exc
        except Exception as exc:
            raise StoreUnavailableError(f"Qdrant {what} failed: {exc}") from exc

    def recipe(self, collection: str) -> CollectionRecipe | None:
        if not self._call("lookup", self.client.collection_exists, collection):
            return None
        info = self._call("lookup", self.client.get_collection, collection)
        data = (info.config.metadata or {}).get(_RECIPE_KEY)
        return CollectionRecipe.from_dict(data) if data else None

    def _recipe_waiting_out_a_swap(self, collection: str) -> CollectionRecipe:
        """The collection's recipe; during the one instant a collection made before aliases
        is missing (dropped, its alias not yet made) a search waits for it, not fails."""
        deadline = time.monotonic() + 5.0
        while True:
            recipe = self.recipe(collection)
            if recipe is not None:
                return recipe
            swapping = collection in self.layout.local or any(
                generation_of(n, collection) is not None for n in self.layout.names()
            )
            if not swapping or time.monotonic() > deadline:
                raise NotFoundError(f"collection {collection!r} does not exist")
            time.sleep(0.05)

    def _require(self, collection: str) -> None:
        if not self._call("lookup", self.client.collection_exists, collection):
            raise NotFoundError(f"collection {collection!r} does not exist")

    def ensure_collection(self, collection: str, recipe: CollectionRecipe) -> None:
        """Create `collection` as an alias of its first generation (so that a rebuild can
        swap it), or check that it was built with `recipe`."""
        with self._lock:
            stored = self.recipe(collection)
            if stored is not None:
                stored.check(recipe, collection)
                return
            first = physical(collection, self.layout.next_generation(collection))
            self._create(first, recipe, {})
            self.layout.swap(collection, first)

    def _create(self, physical_name: str, recipe: CollectionRecipe, extra: dict[str, Any]) -> None:
        self._call(
            "create collection",
            self.client.create_collection,
            physical_name,
            **self.options.collection_params(recipe),
            metadata={_RECIPE_KEY: recipe.to_dict(), **extra},
        )
        for name, schema in self.options.payload_indexes().items():
            self._call(
                "create index",
                self.client.create_payload_index,
                physical_name,
                field_name=name,
                field_schema=schema,
            )

    def collections(self) -> list[str]:
        """Every collection by the name it is used under (aliases; older collections made
        before aliases by their own name), never a generation or a rebuild in progress."""
        names = set(self.layout.aliases())
        names |= {n for n in self.layout.names() if not is_internal(n)}
        return sorted(n for n in names if not is_side(n) and self.recipe(n) is not None)

    def drop_collection(self, collection: str) -> None:
        with self._lock:
            doomed = [self.layout.target(collection), *self.layout.shadows(collection)]
            if collection in self.layout.aliases():
                drop = models.DeleteAliasOperation(
                    delete_alias=models.DeleteAlias(alias_name=collection)
                )
                self._call(
                    "drop", self.client.update_collection_aliases, change_aliases_operations=[drop]
                )
            for name in filter(None, doomed):
                self._call("drop", self.client.delete_collection, name)

    def swap(self, name: str, incoming: str, outgoing: str) -> None:
        """Point the alias `name` at `incoming`'s collection and keep `name`'s old one as
        `outgoing`, in one atomic alias update (searches move in one step)."""
        with self._lock:
            aliases = self.layout.aliases()
            new = aliases.get(incoming)
            if new is None:
                raise NotFoundError(f"collection {incoming!r} does not exist")
            old = aliases.get(name)
            if old is None and name in self.layout.names():
                raise StoreRejectedError(
                    f"collection {name!r} was made before aliases: rebuild it once "
                    "(quarry backfill-sparse) before moving it to another model"
                )
            dropped = aliases.get(outgoing)
            moved = (name, incoming, outgoing)
            actions: list[Any] = [_drop_alias(a) for a in moved if a in aliases]
            actions.append(_make_alias(name, new))
            if old is not None:
                actions.append(_make_alias(outgoing, old))
            update = self.client.update_collection_aliases
            self._call("swap", update, change_aliases_operations=actions)
            if dropped is not None and dropped not in (new, old):
                self._call("drop", self.client.delete_collection, dropped)

    def _writes(self, collection: str) -> list[str]:
        """Where a write to `collection` goes: it, and a rebuild's new collection if one is
        being filled (so nothing written meanwhile is missing after the swap)."""
        return [collection, *self.layout.shadows(collection)]

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> None:
        if not records:
            return
        for target in self._writes(collection):  # (a rebuild's new one too, in its scheme)
            live = target == collection
            if live:  # checked and written where the alias points now
                target = self.layout.target(collection) or collection
            recipe = self.recipe(target)
            if recipe is None:
                raise NotFoundError(f"collection {collection!r} does not exist")
            check_vectors(recipe, records, collection)
            self._upsert_into(target, recipe, records)
            if live and self.layout.target(collection) != target:  # a swap came between:
                # written to the old collection only; another model's now: embed it again
                check_vectors(self._recipe_waiting_out_a_swap(collection), records, collection)

    def _upsert_into(
        self, target: str, recipe: CollectionRecipe, records: Sequence[ChunkRecord]
    ) -> None:
        records = weighed_for(recipe, records)
        points = [_point(recipe, r) for r in records]
        self._call("upsert", self.client.upsert, target, points=points, wait=True)

    def add_sparse(self, collection: str, scheme: str, encode: SparseEncoder) -> int:
        """Give an older collection BM25 vectors from its stored chunk text (no re-embedding).

        A server cannot add a vector to a collection: a new generation with the sparse
        vector is filled beside the live one and swapped in by alias (`qdrant_rebuild`);
        searches answer from the old one until the swap; a killed run resumes.
        """
        with self._lock:
            recipe = self.recipe(collection)
            if recipe is None:
                raise NotFoundError(f"collection {collection!r} does not exist")
            if recipe.sparse == scheme:
                return 0
            return Rebuild(self, collection, recipe, replace(recipe, sparse=scheme)).run(encode)

    def _count(self, collection: str, flt: models.Filter | None) -> int:
        result = self._call("count", self.client.count, collection, count_filter=flt, exact=True)
        return int(result.count)

    def document(self, collection: str, doc_id: str) -> DocumentInfo | None:
        if self.recipe(collection) is None:
            return None
        heads = self._call(
            "retrieve",
            self.client.retrieve,
            collection,
            ids=[chunk_id(doc_id, 0)],
            with_payload=HEAD_FIELDS,
            with_vectors=False,
        )
        if not heads:
            return None
        stored = self._count(collection, models.Filter(must=[_doc_condition(doc_id)]))
        return DocumentInfo.from_head(heads[0].payload or {}, stored)

    def documents(self, collection: str) -> list[DocumentInfo]:
        return self.document_page(collection, EVERY_DOCUMENT).documents

    def document_page(self, collection: str, query: DocumentQuery) -> DocumentPage:
        self._require(collection)
        must: list[Any] = [
            models.FieldCondition(key="chunk_index", match=models.MatchValue(value=0))
        ]
        for meta in metadata_matches(query.meta):
            should: list[Any] = [
                models.FieldCondition(key=meta.key, match=models.MatchValue(value=v))
                for v in meta.values
            ]
            if meta.number is not None:
                exact = models.Range(gte=meta.number, lte=meta.number)
                should.append(models.FieldCondition(key=meta.key, range=exact))
            must.append(models.Filter(should=should))
        per_source = self._facet(collection, "source", models.Filter(must=must))
        found = window(per_source, query)
        if not found.sources:
            return DocumentPage(found.total, [])
        in_page: list[Any] = []
        if not found.every:
            in_page.append(
                models.FieldCondition(key="source", match=models.MatchAny(any=found.sources))
            )
        heads: list[dict[str, Any]] = []
        offset = None
        while True:
            page, offset = self._call(
                "scroll",
                self.client.scroll,
                collection,
                scroll_filter=models.Filter(must=[*must, *in_page]),
                limit=256,
                offset=offset,
                with_payload=HEAD_FIELDS,
                with_vectors=False,
            )
            heads += [point.payload or {} for point in page]
            if offset is None:
                break
        chunks = self._facet(collection, "doc_id", models.Filter(must=in_page) if in_page else None)
        return page_of(heads, chunks, found, query.limit)

    def _facet(self, collection: str, key: str, flt: models.Filter | None) -> dict[str, int]:
        """Each value of indexed field `key` among the points `flt` passes, and their count."""
        result = self._call(
            "facet",
            self.client.facet,
            collection,
            key=key,
            facet_filter=flt,
            limit=FACET_ALL,
            exact=True,
        )
        return {_facet_value(key, hit.value): int(hit.count) for hit in result.hits}

    def chunks(self, collection: str, doc_id: str) -> list[SearchHit]:
        found = self.chunk_payloads(collection, doc_id)
        return [SearchHit.from_payload(id_, 0.0, payload) for id_, payload in found]

    def chunk_payloads(self, collection: str, doc_id: str) -> list[tuple[str, dict[str, Any]]]:
        """A document's chunks' ids and whole payloads, in chunk order."""
        info = self.document(collection, doc_id)
        if info is None:
            return []
        ids = [chunk_id(doc_id, i) for i in range(max(info.expected_chunks, info.chunks))]
        points = self._call(
            "retrieve", self.client.retrieve, collection, ids=ids, with_payload=True
        )
        found = [(str(p.id), dict(p.payload or {})) for p in points]
        return sorted(found, key=lambda item: int(item[1].get("chunk_index", 0)))

    @contextmanager
    def holding_writes(self, collection: str) -> Iterator[None]:
        """Nothing is held: a server's writers are other processes too (a migration catches
        up after its swap instead)."""
        yield

    def _delete(self, collection: str, flt: models.Filter) -> int:
        doomed = self._count(collection, flt)
        for target in self._writes(collection):
            selector = models.FilterSelector(filter=flt)
            if doomed or target != collection:
                self._call(
                    "delete", self.client.delete, target, points_selector=selector, wait=True
                )
        return doomed

    def delete_document(self, collection: str, doc_id: str) -> int:
        self._require(collection)
        return self._delete(collection, models.Filter(must=[_doc_condition(doc_id)]))

    def prune_source(
        self, collection: str, source: str, keep_doc_id: str, keep_chunks: int, seq: int = 0
    ) -> int:
        if self.recipe(collection) is None:
            return 0
        keep: list[models.Condition] = [_doc_condition(keep_doc_id)]
        if seq:  # older versions only: a newer one, stored meanwhile, stays
            keep.append(models.FieldCondition(key="seq", range=models.Range(gte=seq)))
        others = models.Filter(must=[_source_condition(source)], must_not=keep)
        kept: list[models.ExtendedPointId] = [chunk_id(keep_doc_id, i) for i in range(keep_chunks)]
        stale = models.Filter(
            must=[_doc_condition(keep_doc_id)],
            must_not=[models.HasIdCondition(has_id=kept)],
        )
        return self._delete(collection, others) + self._delete(collection, stale)

    def newer_version(self, collection: str, source: str, doc_id: str, seq: int) -> bool:
        if self.recipe(collection) is None:
            return False
        newer = models.Filter(
            must=[
                _source_condition(source),
                models.FieldCondition(key="seq", range=models.Range(gt=seq)),
            ],
            must_not=[_doc_condition(doc_id)],
        )
        return self._count(collection, newer) > 0

    def stamp_version(self, collection: str, doc_id: str, seq: int) -> None:
        for target in self._writes(collection):
            self._call(
                "stamp",
                self.client.set_payload,
                target,
                payload={"seq": seq},
                points=models.Filter(must=[_doc_condition(doc_id)]),
                wait=True,
            )

    def count(self, collection: str, filters: Filters | None = None) -> int:
        if self.recipe(collection) is None:
            return 0
        return self._count(collection, _filter(filters))

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
        recipe = self._recipe_waiting_out_a_swap(collection)
        flt = _filter(filters)
        params = self.options.search_params()
        stages = build_all(recipe, plan, vectors, sparse, limit, score_threshold)
        requests = [_request(stage, flt, params) for stage in stages if stage is not None]
        found = (
            self._call("search", self.client.query_batch_points, collection, requests=requests)
            if requests
            else []
        )
        hits = [
            [SearchHit.from_payload(p.id, p.score, p.payload or {}) for p in response.points]
            for response in found
        ]
        return regroup(stages, hits)

    def optimize(self, collection: str) -> None:
        """The server indexes in the background; nothing to do here."""

    def close(self) -> None:
        self.client.close()
