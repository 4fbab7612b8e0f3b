"""Blue-green collections on a Qdrant server: a rebuild never drops the live one.

A collection `name` is an alias of a physical collection `name@g<n>` (Quarry's collection
names cannot hold `@`, so these never clash with a user's). A rebuild (BM25 vectors for an
older collection, and any future one) fills `name@g<n+1>` beside the live one, marked
`building` in its metadata; every writer that sees the mark writes to both; when the copy
is complete (and a catch-up pass has taken what writers not yet aware of it wrote), one
`update_collection_aliases` call moves `name` to the new collection, atomically: searches
go on against the old collection until that instant, then against the new, never neither.
Killed at any step, the next run resumes: the copy is idempotent (the same point ids), the
mark says which collection it was filling.

A collection made before aliases (a physical collection called `name`) is converted at its
first rebuild: the old collection is dropped and the alias created right after, the only
instant without `name`, which searches wait out (`QdrantServerStore._retrying`).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from qdrant_client import QdrantClient, models

from retrieval.models import ChunkRecord, CollectionRecipe
from retrieval.protocol import SparseEncoder
from retrieval.query_plan import full_vector

if TYPE_CHECKING:
    from retrieval.qdrant_store import QdrantServerStore

GENERATION = "@g"
BUILDING = "quarry_building"  # metadata: {"of": <alias>, "started": <epoch s>}
SHADOW_TTL_S = 2.0  # how stale a writer's view of the rebuilds in progress may be


def physical(name: str, generation: int) -> str:
    return f"{name}{GENERATION}{generation}"


def generation_of(collection: str, name: str) -> int | None:
    found = re.fullmatch(re.escape(name) + re.escape(GENERATION) + r"(\d+)", collection)
    return int(found.group(1)) if found else None


def is_internal(collection: str) -> bool:
    return GENERATION in collection


class Layout:
    """Aliases, generations and the rebuilds in progress, as the server has them."""

    def __init__(self, client: QdrantClient, call: Callable[..., Any]) -> None:
        self.client = client
        self._call = call
        self._lock = threading.Lock()
        self._shadows: dict[str, tuple[float, list[str]]] = {}
        self.local: dict[str, str] = {}  # rebuilds this process runs: alias -> target

    def aliases(self) -> dict[str, str]:
        """alias -> the physical collection it names."""
        found = self._call("aliases", self.client.get_aliases).aliases
        return {a.alias_name: a.collection_name for a in found}

    def names(self) -> list[str]:
        return [c.name for c in self._call("list", self.client.get_collections).collections]

    def target(self, name: str) -> str | None:
        """The physical collection `name` stands for (itself, before aliases), or None."""
        aliased = self.aliases().get(name)
        if aliased is not None:
            return aliased
        return name if name in self.names() else None

    def metadata(self, collection: str) -> dict[str, Any]:
        info = self._call("lookup", self.client.get_collection, collection)
        return dict(info.config.metadata or {})

    def building(self, name: str) -> str | None:
        """The physical collection a rebuild of `name` is filling, if one is under way."""
        live = self.target(name)
        for candidate in self.names():
            if generation_of(candidate, name) is None or candidate == live:
                continue
            if self.metadata(candidate).get(BUILDING, {}).get("of") == name:
                return candidate
        return None

    def next_generation(self, name: str) -> int:
        taken = [g for c in self.names() if (g := generation_of(c, name)) is not None]
        return max(taken, default=0) + 1

    def shadows(self, name: str) -> list[str]:
        """Where writes to `name` must also go: the collection a rebuild is filling (ours,
        or another process's, seen within SHADOW_TTL_S)."""
        if name in self.local:
            return [self.local[name]]
        now = time.monotonic()
        with self._lock:
            cached = self._shadows.get(name)
            if cached is not None and now - cached[0] < SHADOW_TTL_S:
                return cached[1]
        found = self.building(name)
        result = [found] if found else []
        with self._lock:
            self._shadows[name] = (now, result)
        return result

    def swap(self, name: str, new: str) -> str | None:
        """Point `name` at `new` in one step; returns the collection it named before."""
        aliases = self.aliases()
        old = aliases.get(name) or (name if name in self.names() else None)
        if old == name:
            # Before aliases: `name` is a collection; the alias can only follow its drop.
            self._call("drop", self.client.delete_collection, name)
            old = None
        actions: list[Any] = []
        if name in aliases:
            actions.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=name))
            )
        actions.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=new, alias_name=name)
            )
        )
        self._call("swap", self.client.update_collection_aliases, change_aliases_operations=actions)
        return old


class Rebuild:
    """One rebuild of `collection` into a new generation laid out by `upgraded`."""

    def __init__(
        self,
        store: QdrantServerStore,
        collection: str,
        recipe: CollectionRecipe,
        upgraded: CollectionRecipe,
    ) -> None:
        self.store = store
        self.collection = collection
        self.recipe = recipe
        self.upgraded = upgraded

    def run(self, encode: SparseEncoder) -> int:
        """Fill (or go on filling) the new generation, catch up, swap; returns the points
        copied. The old generation is dropped once the alias has moved."""
        store, name = self.store, self.collection
        target = store.layout.building(name)
        if target is None:
            target = physical(name, store.layout.next_generation(name))
            store._create(target, self.upgraded, {BUILDING: {"of": name, "started": time.time()}})
        store.layout.local[name] = target
        try:
            copied = self._copy(name, self.recipe, target, self.upgraded, encode)
            time.sleep(SHADOW_TTL_S + 0.5)  # every writer has seen the mark by now
            self._catch_up(name, self.recipe, target, self.upgraded, encode)
            old = store.layout.swap(name, target)
            store._call("mark", store.client.update_collection, target, metadata={BUILDING: {}})
            if old is not None and old != target:
                store._call("drop", store.client.delete_collection, old)
        finally:
            store.layout.local.pop(name, None)
        return copied

    def _pages(
        self, source: str, ids: list[models.ExtendedPointId] | None = None
    ) -> Iterator[list[Any]]:
        """Every point of `source` (or those of `ids`), with payload and vectors."""
        if ids is not None:
            for start in range(0, len(ids), 256):
                yield self.store._call(
                    "retrieve",
                    self.store.client.retrieve,
                    source,
                    ids=ids[start : start + 256],
                    with_payload=True,
                    with_vectors=True,
                )
            return
        yield from self._scroll(source, 256, payload=True, vectors=True)

    def _scroll(
        self, source: str, limit: int, *, payload: bool | list[str], vectors: bool
    ) -> Iterator[list[Any]]:
        offset = None
        while True:
            page, offset = self.store._call(
                "scroll",
                self.store.client.scroll,
                source,
                limit=limit,
                offset=offset,
                with_payload=payload,
                with_vectors=vectors,
            )
            yield page
            if offset is None:
                return

    def _copy(
        self,
        source: str,
        layout: CollectionRecipe,
        target: str,
        upgraded: CollectionRecipe,
        encode: SparseEncoder,
        ids: list[models.ExtendedPointId] | None = None,
    ) -> int:
        copied = 0
        for page in self._pages(source, ids):
            weights = encode([str((p.payload or {}).get("text", "")) for p in page])
            records = [
                ChunkRecord(str(p.id), full_vector(layout, p.vector), p.payload or {}, w)
                for p, w in zip(page, weights, strict=True)
            ]
            if records:
                self.store._upsert_into(target, upgraded, records)
            copied += len(records)
        return copied

    def _stamps(self, collection: str) -> dict[Any, tuple[Any, ...]]:
        """Each point's id -> what says which version of it this is."""
        found: dict[Any, tuple[Any, ...]] = {}
        fields = ["doc_id", "seq", "ingested_at"]
        for page in self._scroll(collection, 1024, payload=fields, vectors=False):
            for p in page:
                load = p.payload or {}
                found[p.id] = (load.get("doc_id"), load.get("seq"), load.get("ingested_at"))
        return found

    def _catch_up(
        self,
        source: str,
        layout: CollectionRecipe,
        target: str,
        upgraded: CollectionRecipe,
        encode: SparseEncoder,
    ) -> None:
        """Make `target` hold exactly what `source` holds now: points written or replaced
        by writers that had not yet seen the rebuild are copied, points deleted meanwhile
        are deleted (writers aware of it wrote to both already)."""
        live, built = self._stamps(source), self._stamps(target)
        stale = [pid for pid, stamp in live.items() if built.get(pid) != stamp]
        gone = [pid for pid in built if pid not in live]
        if stale:
            self._copy(source, layout, target, upgraded, encode, ids=stale)
        if gone:
            selector = models.PointIdsList(points=gone)
            self.store._call(
                "delete", self.store.client.delete, target, points_selector=selector, wait=True
            )
