"""The real app (factory + lifespan) behind httpx, on a fresh data dir."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

from ..servers import Process, quarry_env


def start_client(settings: Settings, headers: dict[str, str] | None = None) -> TestClient:
    client = TestClient(create_app(settings), headers=headers or {})
    client.__enter__()
    deadline = time.monotonic() + 120
    while client.get("/readyz").json()["checks"]["model"]["ok"] is not True:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.1)
    return client


@pytest.fixture()
def server_env(tmp_path: Path, minilm_path: str, redis_process: Any) -> dict[str, str]:
    """The environment of a `quarry serve` process on a fresh data dir (MiniLM, real Redis)."""
    return quarry_env(tmp_path / "data", minilm_path, redis_process.url, QUARRY_COLLECTION="served")


@pytest.fixture()
def server(server_env: dict[str, str], tmp_path: Path) -> Iterator[Process]:
    running = Process("serve", server_env, tmp_path / "server.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture()
def api(settings: Settings) -> Iterator[TestClient]:
    client = start_client(settings)
    yield client
    client.__exit__(None, None, None)


def wait_for_job(client: TestClient, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "partial"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


UploadFiles = list[tuple[str, tuple[str, bytes, str]]]
Uploader = Callable[..., Any]


def files(*pairs: tuple[str, bytes]) -> UploadFiles:
    return [("files", (name, data, "application/octet-stream")) for name, data in pairs]
