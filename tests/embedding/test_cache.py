"""The Redis cache against a real server process, including the server going away and back."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import redis

from embedding.cache import CachedEmbedder, RedisVectorCache
from embedding.model_source import resolve_model
from embedding.protocol import EmbeddingRecipe
from embedding.st_embedder import SentenceTransformerEmbedder


class CountingEmbedder:
    """The real MiniLM embedder, counting the texts that reach the model."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.seen: list[str] = []

    @property
    def recipe(self) -> EmbeddingRecipe:
        return self.inner.recipe

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        return self.inner.embed_documents(texts)

    def embed_queries(self, texts: Sequence[str], instruction: str | None) -> np.ndarray:
        self.seen.extend(texts)
        return self.inner.embed_queries(texts, instruction)


def make(minilm_path: str, url: str) -> tuple[CachedEmbedder, CountingEmbedder]:
    inner = CountingEmbedder(SentenceTransformerEmbedder(resolve_model(minilm_path)))
    cache = RedisVectorCache(lambda: redis.Redis.from_url(url, socket_timeout=1), retry_after=0.0)
    return CachedEmbedder(inner, cache), inner


def test_only_misses_reach_the_model(minilm_path: str, own_redis) -> None:  # type: ignore[no-untyped-def]
    cached, inner = make(minilm_path, own_redis.url)
    first = cached.embed_documents(["alpha", "beta"])
    inner.seen.clear()
    second = cached.embed_documents(["beta", "gamma", "alpha"])
    assert inner.seen == ["gamma"]
    np.testing.assert_allclose(second[0], first[1], atol=1e-7)
    np.testing.assert_allclose(second[2], first[0], atol=1e-7)
    assert cached.stats.hits == 2 and cached.stats.misses == 3
    keys = redis.Redis.from_url(own_redis.url).keys("quarry:emb:*")
    assert keys, "vectors are stored in Redis hashes"


def test_queries_and_documents_do_not_share_entries(minilm_path: str, own_redis) -> None:  # type: ignore[no-untyped-def]
    cached, inner = make(minilm_path, own_redis.url)
    cached.embed_documents(["same text"])
    inner.seen.clear()
    cached.embed_queries(["same text"], "an instruction")
    assert inner.seen == ["same text"]


def test_redis_down_bypasses_then_recovers(minilm_path: str, own_redis) -> None:  # type: ignore[no-untyped-def]
    cached, inner = make(minilm_path, own_redis.url)
    cached.embed_documents(["warm"])
    own_redis.stop()
    vectors = cached.embed_documents(["warm", "cold"])
    assert vectors.shape == (2, 384)
    assert cached.stats.errors >= 1 and cached.stats.bypassed == 2
    own_redis.start()
    cached.embed_documents(["after restart"])
    inner.seen.clear()
    cached.embed_documents(["after restart"])
    assert inner.seen == [], "the cache is used again once Redis is back"


def test_redis_replies_are_parsed_in_c() -> None:
    """hiredis is installed and redis-py takes it (it ignores a version it cannot use)."""
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE
