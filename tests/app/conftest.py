"""The real app (factory + lifespan) behind httpx, on a fresh data dir."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


def start_client(settings: Settings, headers: dict[str, str] | None = None) -> TestClient:
    client = TestClient(create_app(settings), headers=headers or {})
    client.__enter__()
    deadline = time.monotonic() + 120
    while client.get("/readyz").json()["checks"]["model"]["ok"] is not True:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.1)
    return client


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
