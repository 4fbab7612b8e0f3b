"""The embedded default: Qdrant's own engine in-process (qdrant-edge), one shard per collection."""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from retrieval.document_pages import (
    EVERY_DOCUMENT,
    FACET_ALL,
    DocumentPage,
    DocumentQuery,
    metadata_matches,
    page_of,
    window,
)
from retrieval.errors import NotFoundError, StoreFullError, StoreUnavailableError, disk_full
from retrieval.file_copy import copy_with_holes
from retrieval.group_commit import GroupCommit
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
from retrieval.query_plan import (
    Nearest,
    Rrf,
    Stage,
    build_all,
    full_vector,
    point_vectors,
    regroup,
)
from retrieval.sparse import SPARSE_VECTOR, SparseVec

_RECIPE_FILE = "recipe.json"
_SWAP_SUFFIX = "~swap.json"  # root/<name>~swap.json: a swap under way (no collection has ~)


def _filter(filters: Filters | None) -> qe.Filter | None:
    must: list[Any] = []
    for key, value in (filters or {}).items():
        values = value if isinstance(value, list) else [value]
        match: Any = qe.MatchAny(values) if len(values) > 1 else qe.MatchValue(values[0])
        must.append(qe.FieldCondition(key=payload_key(key), match=match))
    return qe.Filter(must=must) if must else None


def _doc_condition(doc_id: str) -> qe.FieldCondition:
    return qe.FieldCondition(key="doc_id", match=qe.MatchValue(doc_id))


def _source_condition(source: str) -> qe.FieldCondition:
    return qe.FieldCondition(key="source", match=qe.MatchValue(source))


def _sparse(vector: SparseVec) -> qe.SparseVector:
    return qe.SparseVector(list(vector.indices), list(vector.values))


def _config(recipe: CollectionRecipe) -> qe.EdgeConfig:
    full = qe.EdgeVectorParams(size=recipe.dimension, distance=qe.Distance.Cosine)
    vectors: qe.EdgeVectorParams | dict[str, qe.EdgeVectorParams] = full
    if recipe.small_dim:  # the prefix searched first, int8 in RAM
        small = qe.EdgeVectorParams(
            size=recipe.small_dim,
            distance=qe.Distance.Cosine,
            quantization_config=qe.ScalarQuantizationConfig(
                type=qe.ScalarType.Int8, quantile=0.99, always_ram=True
            ),
        )
        vectors = {recipe.dense_vector: full, SMALL_VECTOR: small}
    sparse = (
        {SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
        if recipe.sparse
        else None
    )
    return qe.EdgeConfig(
        vectors=vectors,
        sparse_vectors=sparse,
        hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=128, full_scan_threshold=10_000),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=10_000),
    )


def _vector(value: list[float] | SparseVec) -> Any:
    return _sparse(value) if isinstance(value, SparseVec) else value


def _edge_query(query: Nearest | Rrf) -> Any:
    if isinstance(query, Rrf):
        return qe.Fusion.Rrf(k=query.k, weights=query.weights)
    return qe.Query.Nearest(_vector(query.vector), using=query.using)


def _stage_fields(stage: Stage, flt: qe.Filter | None) -> dict[str, Any]:
    """What a prefetch and the top request of a plan both say about their stage."""
    return {
        "limit": stage.limit,
        "query": _edge_query(stage.query),
        "prefetches": [_prefetch(p, flt) for p in stage.prefetch] or None,
        "filter": flt,
        "score_threshold": stage.threshold,
    }


def _prefetch(stage: Stage, flt: qe.Filter | None) -> qe.Prefetch:
    return qe.Prefetch(**_stage_fields(stage, flt))


def _request(stage: Stage, flt: qe.Filter | None) -> qe.QueryRequest:
    return qe.QueryRequest(**_stage_fields(stage, flt), with_payload=True)


@contextmanager
def _writing(collection: str) -> Iterator[None]:
    """A full disk is a dependency's outage (the write waits for room), not a bug."""
    try:
        yield
    except StoreFullError:
        raise
    except Exception as exc:
        if disk_full(exc):
            raise StoreFullError(
                f"cannot write to collection {collection!r}: the data dir's disk is full ({exc})"
            ) from exc
        raise


# qdrant-edge maps its WAL and segment files into memory, sparse: a page first written on a
# full disk kills the process with SIGBUS instead of raising (seen on a full tmpfs). So a
# write, or a new collection, waits (StoreFullError) while less than this is free.
WRITE_RESERVE_BYTES = 16 * 1024 * 1024


def _check_room(root: Path, collection: str) -> None:
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return  # not there yet: the write says what is wrong
    if free < WRITE_RESERVE_BYTES:
        raise StoreFullError(
            f"cannot write to collection {collection!r}: the data dir's disk is full "
            f"({free // 1_000_000} MB free; writes wait for {WRITE_RESERVE_BYTES // 1_000_000} MB)"
        )


class EdgeStore:
    """Collections live in `root/<name>/` next to the recipe they were built with."""

    writers_elsewhere = False  # every write goes through the process that owns the data dir

    def __init__(self, root: Path) -> None:
        self.root = root
        self._shards: dict[str, qe.EdgeShard] = {}
        self._recipes: dict[str, CollectionRecipe] = {}
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._busy: dict[int, int] = {}  # id(shard) -> reads and writes using it right now
        self._commits: dict[int, GroupCommit] = {}  # id(shard) -> its flushes
        self._swapping: set[str] = set()  # collections whose rebuilt shard is being swapped in
        self._held: set[str] = set()  # collections whose writes wait (a migration's last step)
        self.finish_swaps()

    @contextmanager
    def _reading(self, collection: str) -> Iterator[qe.EdgeShard]:
        """A shard for one read outside the lock: it is not closed (by a rebuild, a drop,
        `close`) until every read on it has returned."""
        with self._lock:
            shard = self._shard(collection)
            self._busy[id(shard)] = self._busy.get(id(shard), 0) + 1
        try:
            yield shard
        finally:
            self._release(shard)

    def _release(self, shard: qe.EdgeShard) -> None:
        with self._lock:
            left = self._busy.pop(id(shard)) - 1
            if left:
                self._busy[id(shard)] = left
            self._idle.notify_all()

    def _apply(self, collection: str, operation: Any) -> None:
        """Apply an update (or what a callable builds, under the lock) to the collection's
        shard and return once it is on disk: the flush is shared with the writers waiting
        meanwhile (group commit)."""
        with self._lock:
            while True:  # (waiting in `_shard` for a swap gives a hold the time to begin)
                while collection in self._held:
                    self._idle.wait()
                shard = self._shard(collection)
                if collection not in self._held:
                    break
            if callable(operation):
                operation = operation()
            _check_room(self.root, collection)
            with _writing(collection):
                shard.update(operation)
            commit = self._commits.setdefault(id(shard), GroupCommit())
            ticket = commit.wrote()
            self._busy[id(shard)] = self._busy.get(id(shard), 0) + 1  # not closed meanwhile
        try:
            with _writing(collection):
                commit.wait(ticket, shard.flush)
        finally:
            self._release(shard)

    def _retire(self, shard: qe.EdgeShard) -> None:
        """Close `shard` once no read or write uses it (called holding the lock, which the
        wait gives up meanwhile)."""
        while self._busy.get(id(shard)):
            self._idle.wait()
        self._commits.pop(id(shard), None)
        shard.close()

    def _dir(self, collection: str) -> Path:
        return self.root / collection

    def _shard(self, collection: str, waiting: bool = True) -> qe.EdgeShard:
        """The collection's open shard (opened now if need be); `waiting`: first wait out a
        copy, rebuild or swap of it (the one holding it passes False)."""
        with self._lock:
            while waiting and collection in self._swapping:  # a write now would be lost
                self._idle.wait()
            shard = self._shards.get(collection)
            if shard is not None:
                return shard
            path = self._dir(collection) / "shard"
            if not path.exists() and (path.parent / "shard.old").exists():
                os.replace(path.parent / "shard.old", path)  # a backfill died mid-swap
            if not path.exists():
                raise NotFoundError(f"collection {collection!r} does not exist")
            try:
                shard = qe.EdgeShard.load(str(path))
            except Exception as exc:
                raise StoreUnavailableError(
                    f"cannot open collection {collection!r} at {path}: {exc}"
                ) from exc
            self._shards[collection] = shard
            return shard

    def recipe(self, collection: str) -> CollectionRecipe | None:
        known = self._recipes.get(collection)
        if known is not None:
            return known
        with self._lock:  # read and cached under the lock: a swap clears it after its renames
            file = self._dir(collection) / _RECIPE_FILE
            if not file.exists():
                return None
            recipe = CollectionRecipe.from_dict(json.loads(file.read_text(encoding="utf-8")))
            self._recipes[collection] = recipe
            return recipe

    def _exclusive(self, *collections: str) -> None:
        """Wait until no copy, rebuild or swap holds any of `collections`, then hold them
        (called holding the lock; `_release_exclusive` ends it)."""
        while any(c in self._swapping for c in collections):
            self._idle.wait()
        self._swapping.update(collections)

    def _release_exclusive(self, *collections: str) -> None:
        self._swapping.difference_update(collections)
        self._idle.notify_all()

    def ensure_collection(self, collection: str, recipe: CollectionRecipe) -> None:
        with self._lock:
            stored = self.recipe(collection)
            if stored is not None:
                stored.check(recipe, collection)
                return
            directory = self._dir(collection)
            directory.mkdir(parents=True, exist_ok=True)
            _check_room(self.root, collection)
            with _writing(collection):
                self._shards[collection] = self._create_shard(directory / "shard", recipe)
            # Written last: a collection without its recipe file is an unfinished one.
            self._write_recipe(collection, recipe)

    @staticmethod
    def _create_shard(path: Path, recipe: CollectionRecipe) -> qe.EdgeShard:
        shard = qe.EdgeShard.create(str(path), _config(recipe))
        for name in INDEXED_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
        shard.flush()
        return shard

    def _write_recipe(self, collection: str, recipe: CollectionRecipe) -> None:
        """Replaced atomically: a search reading it meanwhile sees the old or the new file."""
        directory = self._dir(collection)
        staged = directory / f"{_RECIPE_FILE}.tmp"
        staged.write_text(json.dumps(recipe.to_dict()), encoding="utf-8")
        os.replace(staged, directory / _RECIPE_FILE)
        self._recipes[collection] = recipe

    def add_sparse(self, collection: str, scheme: str, encode: SparseEncoder) -> int:
        """Give an older collection BM25 vectors from its stored chunk text (no re-embedding).

        The shard is rebuilt beside the old one with the sparse vector in its layout, then
        swapped in; searches wait for the swap (the store's lock), never see half of it.
        """
        with self._lock:
            # Held from the start (one rebuild, copy or swap of it at a time); reads wait
            # for the lock during the copy anyway.
            self._exclusive(collection)
            try:
                recipe = self.recipe(collection)
                if recipe is None:
                    raise NotFoundError(f"collection {collection!r} does not exist")
                if recipe.sparse == scheme:
                    return 0
                upgraded = replace(recipe, sparse=scheme)
                directory = self._dir(collection)
                fresh_path = directory / "shard.new"
                shutil.rmtree(fresh_path, ignore_errors=True)
                fresh = self._create_shard(fresh_path, upgraded)
                old = self._shard(collection, waiting=False)
                copied = self._copy_weighed(old, fresh, recipe, upgraded, encode)
                self._retire(old)  # reads and flushes running on it finish first
                del self._shards[collection]  # from here on, the new shard is opened
                os.replace(directory / "shard", directory / "shard.old")
                os.replace(fresh_path, directory / "shard")
                self._write_recipe(collection, upgraded)
            finally:
                self._release_exclusive(collection)
            shutil.rmtree(directory / "shard.old", ignore_errors=True)
            return copied

    @staticmethod
    def _copy_weighed(
        old: qe.EdgeShard,
        fresh: qe.EdgeShard,
        recipe: CollectionRecipe,
        upgraded: CollectionRecipe,
        encode: SparseEncoder,
    ) -> int:
        """Every point of `old` into `fresh` with BM25 weights from its text; the count."""
        copied = 0
        offset: Any = None
        while True:
            page, offset = old.scroll(
                qe.ScrollRequest(offset=offset, limit=256, with_payload=True, with_vector=True)
            )
            weights = encode([str((r.payload or {}).get("text", "")) for r in page])
            points = [
                qe.Point(
                    r.id,
                    _layout(point_vectors(upgraded, full_vector(recipe, r.vector), w)),
                    r.payload,
                )
                for r, w in zip(page, weights, strict=True)
            ]
            if points:
                fresh.update(qe.UpdateOperation.upsert_points(points))
            copied += len(points)
            if offset is None:
                break
        fresh.flush()
        fresh.close()
        return copied

    def collections(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if (p / _RECIPE_FILE).exists() and not is_side(p.name)
        )

    def drop_collection(self, collection: str) -> None:
        with self._lock:
            self._recipes.pop(collection, None)
            shard = self._shards.get(collection)
            if shard is not None:
                self._retire(shard)
                self._shards.pop(collection, None)
            shutil.rmtree(self._dir(collection), ignore_errors=True)

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> None:
        if not records:
            return

        def points() -> Any:  # built under the lock: the layout and scheme of the shard now
            recipe = self.recipe(collection)
            if recipe is None:
                raise NotFoundError(f"collection {collection!r} does not exist")
            check_vectors(recipe, records, collection)
            fresh = weighed_for(recipe, records)
            return qe.UpdateOperation.upsert_points(
                [
                    qe.Point(r.id, _layout(point_vectors(recipe, r.vector, r.sparse)), r.payload)
                    for r in fresh
                ]
            )

        self._apply(collection, points)

    def document(self, collection: str, doc_id: str) -> DocumentInfo | None:
        if self.recipe(collection) is None:
            return None
        with self._reading(collection) as shard:
            heads = shard.retrieve(
                [chunk_id(doc_id, 0)], with_payload=HEAD_FIELDS, with_vector=False
            )
            if not heads:
                return None
            stored = shard.count(
                qe.CountRequest(exact=True, filter=qe.Filter(must=[_doc_condition(doc_id)]))
            )
        return DocumentInfo.from_head(heads[0].payload or {}, stored)

    def documents(self, collection: str) -> list[DocumentInfo]:
        return self.document_page(collection, EVERY_DOCUMENT).documents

    def document_page(self, collection: str, query: DocumentQuery) -> DocumentPage:
        must: list[Any] = [qe.FieldCondition(key="chunk_index", match=qe.MatchValue(0))]
        for meta in metadata_matches(query.meta):
            should: list[Any] = [
                qe.FieldCondition(key=meta.key, match=qe.MatchValue(v)) for v in meta.values
            ]
            if meta.number is not None:
                exact = qe.RangeFloat(gte=meta.number, lte=meta.number)
                should.append(qe.FieldCondition(key=meta.key, range=exact))
            must.append(qe.Filter(should=should))
        with self._reading(collection) as shard:
            per_source = shard.facet(qe.FacetRequest("source", FACET_ALL, True, qe.Filter(must)))
            found = window({str(h.value): h.count for h in per_source.hits}, query)
            if not found.sources:
                return DocumentPage(found.total, [])
            in_page: list[Any] = (
                []
                if found.every
                else [qe.FieldCondition(key="source", match=qe.MatchAny(found.sources))]
            )
            points, offset = [], None
            while True:
                part, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=256,
                        filter=qe.Filter(must=[*must, *in_page]),
                        with_payload=HEAD_FIELDS,
                        with_vector=False,
                    )
                )
                points += part
                if offset is None:
                    break
            per_doc = qe.FacetRequest(
                "doc_id", FACET_ALL, True, qe.Filter(must=in_page) if in_page else None
            )
            counts = shard.facet(per_doc)
        chunks = {str(hit.value): hit.count for hit in counts.hits}
        return page_of([p.payload or {} for p in points], chunks, found, query.limit)

    def chunks(self, collection: str, doc_id: str) -> list[SearchHit]:
        found = self.chunk_payloads(collection, doc_id)
        return [SearchHit.from_payload(id_, 0.0, payload) for id_, payload in found]

    def chunk_payloads(self, collection: str, doc_id: str) -> list[tuple[str, dict[str, Any]]]:
        """A document's chunks' ids and whole payloads, in chunk order."""
        info = self.document(collection, doc_id)
        if info is None:
            return []
        ids: list[int | uuid.UUID | str] = [
            chunk_id(doc_id, i) for i in range(max(info.expected_chunks, info.chunks))
        ]
        with self._reading(collection) as shard:
            points = shard.retrieve(ids, with_payload=True, with_vector=False)
        found = [(str(p.id), dict(p.payload or {})) for p in points]
        return sorted(found, key=lambda item: int(item[1].get("chunk_index", 0)))

    def _delete(self, collection: str, flt: qe.Filter) -> int:
        with self._reading(collection) as shard:
            doomed = shard.count(qe.CountRequest(exact=True, filter=flt))
        if doomed:
            self._apply(collection, qe.UpdateOperation.delete_points_by_filter(flt))
        return int(doomed)

    def delete_document(self, collection: str, doc_id: str) -> int:
        return self._delete(collection, qe.Filter(must=[_doc_condition(doc_id)]))

    def prune_source(
        self, collection: str, source: str, keep_doc_id: str, keep_chunks: int, seq: int = 0
    ) -> int:
        if self.recipe(collection) is None:
            return 0
        keep: list[Any] = [_doc_condition(keep_doc_id)]
        if seq:  # older versions only: a newer one, stored meanwhile, stays
            keep.append(qe.FieldCondition(key="seq", range=qe.RangeFloat(gte=float(seq))))
        others = qe.Filter(must=[_source_condition(source)], must_not=keep)
        kept: set[int | uuid.UUID | str] = {chunk_id(keep_doc_id, i) for i in range(keep_chunks)}
        stale = qe.Filter(must=[_doc_condition(keep_doc_id)], must_not=[qe.HasIdCondition(kept)])
        return self._delete(collection, others) + self._delete(collection, stale)

    def newer_version(self, collection: str, source: str, doc_id: str, seq: int) -> bool:
        if self.recipe(collection) is None:
            return False
        newer = qe.Filter(
            must=[
                _source_condition(source),
                qe.FieldCondition(key="seq", range=qe.RangeFloat(gt=float(seq))),
            ],
            must_not=[_doc_condition(doc_id)],
        )
        with self._reading(collection) as shard:
            return bool(shard.count(qe.CountRequest(exact=True, filter=newer)))

    @contextmanager
    def holding_writes(self, collection: str) -> Iterator[None]:
        """Writes to `collection` wait meanwhile (every write goes through this process:
        the data dir's owner); reads go on."""
        with self._lock:
            while collection in self._held:
                self._idle.wait()
            self._held.add(collection)
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(collection)
                self._idle.notify_all()

    def swap(self, name: str, incoming: str, outgoing: str) -> None:
        """Make `incoming`'s vectors `name`'s and keep `name`'s as `outgoing`, in one step
        for readers and writers: they wait for the two renames, never see neither or a mix.
        A journal written first lets a process killed between the renames finish them."""
        with self._lock:
            if self.recipe(incoming) is None:
                raise NotFoundError(f"collection {incoming!r} does not exist")
            moved = (name, incoming, outgoing)
            self._exclusive(*moved)
            try:
                if self.recipe(incoming) is None:  # dropped while we waited
                    raise NotFoundError(f"collection {incoming!r} does not exist")
                for collection in moved:  # reads and flushes on them finish first
                    shard = self._shards.pop(collection, None)
                    if shard is not None:
                        self._retire(shard)
                journal = self.root / f"{name}{_SWAP_SUFFIX}"
                staged = journal.with_name(journal.name + ".tmp")
                staged.write_text(json.dumps({"incoming": incoming, "outgoing": outgoing}))
                os.replace(staged, journal)
                self._finish_swap(journal)
            finally:
                for collection in moved:  # (under the lock: nothing cached the old ones since)
                    self._recipes.pop(collection, None)
                self._release_exclusive(*moved)

    def _finish_swap(self, journal: Path) -> None:
        """Carry out (or finish) the swap `journal` records; every step is idempotent."""
        name = journal.name.removesuffix(_SWAP_SUFFIX)
        plan = json.loads(journal.read_text(encoding="utf-8"))
        live = self._dir(name)
        incoming, outgoing = self._dir(plan["incoming"]), self._dir(plan["outgoing"])
        if incoming.exists():
            if live.exists():
                shutil.rmtree(outgoing, ignore_errors=True)
                os.replace(live, outgoing)
            os.replace(incoming, live)
        journal.unlink()

    def finish_swaps(self) -> None:
        """Finish the swaps a killed process left half done (called when the store opens)."""
        if self.root.exists():
            for journal in self.root.glob(f"*{_SWAP_SUFFIX}"):
                if journal.is_file():
                    self._finish_swap(journal)

    def snapshot(self, collection: str, dest: Path) -> None:
        """A consistent copy of the collection (its recipe and shard) in `dest`: taken
        holding the store's lock once every write in flight has been flushed, so the copy
        holds each write whole or not at all."""
        with self._lock:
            self._exclusive(collection)  # new reads and writes wait for the copy
            try:
                while True:  # those in flight finish (the wait gives the lock up meanwhile)
                    shard = self._shard(collection, waiting=False)  # (NotFoundError: none)
                    if not self._busy.get(id(shard)):
                        break
                    self._idle.wait()
                shard.flush()
                leftovers = shutil.ignore_patterns("shard.old", "shard.new")  # a dead backfill's
                shutil.copytree(
                    self._dir(collection), dest, ignore=leftovers, copy_function=copy_with_holes
                )
            finally:
                self._release_exclusive(collection)

    def stamp_version(self, collection: str, doc_id: str, seq: int) -> None:
        flt = qe.Filter(must=[_doc_condition(doc_id)])
        self._apply(collection, qe.UpdateOperation.set_payload_by_filter(flt, {"seq": seq}))

    def count(self, collection: str, filters: Filters | None = None) -> int:
        if self.recipe(collection) is None:
            return 0
        with self._reading(collection) as shard:
            return int(shard.count(qe.CountRequest(exact=True, filter=_filter(filters))))

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
        if self.recipe(collection) is None:
            raise NotFoundError(f"collection {collection!r} does not exist")
        flt = _filter(filters)
        with self._reading(collection) as shard:
            recipe = self.recipe(collection)  # the shard's own: a rebuild waits for us
            assert recipe is not None
            stages = build_all(recipe, plan, vectors, sparse, limit, score_threshold)
            requests = [_request(stage, flt) for stage in stages if stage is not None]
            if len(requests) == 1:
                found = [shard.query(requests[0])]
            else:
                found = shard.query_batch(qe.QueryBatchRequest(requests)) if requests else []
        hits = [[SearchHit.from_payload(p.id, p.score, p.payload or {}) for p in f] for f in found]
        return regroup(stages, hits)

    def optimize(self, collection: str) -> None:
        with self._lock:
            self._shard(collection).optimize()

    def close(self) -> None:
        with self._lock:
            for shard in list(self._shards.values()):
                self._retire(shard)
            self._shards.clear()


def _layout(vectors: list[float] | dict[str, list[float] | SparseVec]) -> Any:
    if isinstance(vectors, dict):
        return {name: _vector(value) for name, value in vectors.items()}
    return vectors
