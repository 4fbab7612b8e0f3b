"""Redis hash cache of embeddings, as a wrapper that is itself an `Embedder`."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import redis

from embedding.lanes import lanes_of
from embedding.protocol import Embedder, EmbeddingRecipe

log = logging.getLogger(__name__)

_BUCKETS = 256  # keys per namespace: small enough hashes for LRU eviction to bite


class VectorCache(Protocol):
    """Stores float32 vectors under (namespace, text-hash) keys."""

    def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]: ...

    def put_many(self, namespace: str, items: dict[str, bytes]) -> None: ...


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    bypassed: int = 0


# Cache entries expire (refreshed with every write to their bucket) so that Redis can run
# `maxmemory-policy volatile-lru`: under memory pressure it evicts cache buckets, never the
# ingestion queue that shares the server (its keys have no expiry).
CACHE_TTL_S = 30 * 24 * 3600


class RedisVectorCache:
    """Bucketed Redis hashes; one pipelined read and one pipelined write per batch.

    When Redis fails, calls raise `redis.RedisError`; `CachedEmbedder` turns that into a
    bypass. `connect` is called again on the next use after `retry_after` seconds, so a
    server that comes back is used again without a restart.
    """

    def __init__(self, connect: Callable[[], redis.Redis], retry_after: float = 2.0) -> None:
        self._connect = connect
        self._client: redis.Redis | None = None
        self._retry_after = retry_after
        self._down_since: float | None = None
        self._lock = threading.Lock()

    def _redis(self) -> redis.Redis:
        with self._lock:
            if self._down_since is not None:
                if time.monotonic() - self._down_since < self._retry_after:
                    raise redis.ConnectionError("Redis marked down; retrying shortly")
                self._down_since = None
                self._client = None
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _mark_down(self) -> None:
        """Start the back-off once: calls refused meanwhile must not push the retry away."""
        with self._lock:
            if self._down_since is None:
                self._down_since = time.monotonic()

    @staticmethod
    def _bucket(namespace: str, key: str) -> str:
        return f"quarry:emb:{namespace}:{int(key[:4], 16) % _BUCKETS:02x}"

    def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        try:
            pipe = self._redis().pipeline(transaction=False)
            for key in keys:
                pipe.hget(self._bucket(namespace, key), key)
            return list(pipe.execute())
        except redis.RedisError:
            self._mark_down()
            raise

    def put_many(self, namespace: str, items: dict[str, bytes]) -> None:
        grouped: dict[str, dict[str, bytes]] = {}
        for key, value in items.items():
            grouped.setdefault(self._bucket(namespace, key), {})[key] = value
        try:
            pipe = self._redis().pipeline(transaction=False)
            for bucket, mapping in grouped.items():
                pipe.hset(bucket, mapping=mapping)  # type: ignore[arg-type]
                pipe.expire(bucket, CACHE_TTL_S)
            pipe.execute()
        except redis.RedisError:
            self._mark_down()
            raise

    def ping(self) -> bool:
        try:
            return bool(self._redis().ping())
        except redis.RedisError:
            self._mark_down()
            return False


def text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class CachedEmbedder:
    """Wraps any `Embedder`: read the whole batch at once, embed only the misses, write once."""

    def __init__(self, inner: Embedder, cache: VectorCache) -> None:
        self.inner = inner
        self.cache = cache
        self.stats = CacheStats()
        self._stats_lock = threading.Lock()

    @property
    def recipe(self) -> EmbeddingRecipe:
        return self.inner.recipe

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def lanes(self) -> int:
        """Model calls the wrapped embedder runs at once."""
        return lanes_of(self.inner)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._cached(list(texts), "doc", self.inner.embed_documents)

    def embed_queries(self, texts: Sequence[str], instruction: str | None) -> np.ndarray:
        recipe = self.inner.recipe
        used = instruction if recipe.takes_instruction else None
        role = "q:" + hashlib.blake2b((used or "").encode(), digest_size=8).hexdigest()
        return self._cached(
            list(texts), role, lambda miss: self.inner.embed_queries(miss, instruction)
        )

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def _cached(
        self, texts: list[str], role: str, compute: Callable[[list[str]], np.ndarray]
    ) -> np.ndarray:
        if not texts:
            return compute(texts)
        # The recipe as run: a model whose engine is known only once loaded is loaded first
        # (its key must be the vectors' own, not the plan's).
        recipe = getattr(self.inner, "loaded_recipe", lambda: self.inner.recipe)()
        namespace = f"{recipe.fingerprint()}:{role}"
        keys = [text_key(text) for text in texts]
        try:
            found = self.cache.get_many(namespace, keys)
        except redis.RedisError as exc:
            log.warning("embedding cache unavailable, bypassing it: %s", exc)
            self._count(errors=1, bypassed=len(texts), misses=len(texts))
            return compute(texts)
        vectors: list[np.ndarray | None] = [
            np.frombuffer(raw, dtype=np.float32) if raw is not None else None for raw in found
        ]
        miss_idx = [i for i, vec in enumerate(vectors) if vec is None]
        self._count(hits=len(texts) - len(miss_idx), misses=len(miss_idx))
        if miss_idx:
            computed = compute([texts[i] for i in miss_idx])
            for row, index in enumerate(miss_idx):
                vectors[index] = computed[row]
            try:
                self.cache.put_many(
                    namespace,
                    {
                        keys[i]: np.ascontiguousarray(computed[row], dtype=np.float32).tobytes()
                        for row, i in enumerate(miss_idx)
                    },
                )
            except redis.RedisError as exc:
                log.warning("could not write to the embedding cache: %s", exc)
                self._count(errors=1)
        return np.vstack([vec for vec in vectors if vec is not None]).astype(np.float32, copy=False)
