"""With no URLs configured, Quarry runs its own Redis-compatible server and Qdrant engine."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from app.resources import Resources
from app.settings import Settings


def test_embedded_redis_and_store_survive_a_restart(tmp_path: Path, minilm_path: str) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", embedding_model=minilm_path)
    first = Resources(settings)
    first.embedder.embed_documents(["persist me"])
    assert first.embedder.stats.misses == 1
    url = json.loads((tmp_path / "data" / "redis" / "endpoint").read_text())["url"]
    assert redis.Redis.from_url(url).ping()
    first.close()
    assert not (tmp_path / "data" / "redis" / "endpoint").exists()

    second = Resources(settings)
    second.embedder.embed_documents(["persist me"])
    assert second.embedder.stats.hits == 1, "the cache outlives the server process"
    second.close()
