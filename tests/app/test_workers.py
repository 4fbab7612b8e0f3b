"""Ingestion on `quarry worker` processes over a real queue: kills, stops, Redis outages."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from app.resources import Resources
from app.settings import Settings
from ingest.sources import FileSource

from ..conftest import RedisProcess
from ..ingest.documents import WRITERS, write_document
from ..servers import (
    FAST_RECOVERY,
    Process,
    WorkerProcess,
    quarry,
    quarry_env,
    stored_chunks,
    wait_job,
)
from .test_hardening import text_files, upload
from .test_serve import WORDS

IN_FLIGHT = ("parsing", "embedding")


def mixed_documents(folder: Path, count: int, seed: int = 5) -> list[Path]:
    """`count` real documents in a dozen formats, each with its own text."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    formats = ["pdf", "docx", "pptx", "xlsx", "html", "md", "rst", "txt", "eml", "odt", "epub"]
    paths = []
    for index in range(count):
        ext = formats[index % len(formats)]
        text = f"Record {index}: " + " ".join(rng.choice(WORDS) for _ in range(60)) + "."
        paths.append(write_document(folder, ext, text, stem=f"doc-{index:02d}"))
    assert set(formats) <= set(WRITERS)
    return paths


def clean_run(folder: Path, paths: list[Path], model: str, redis_url: str) -> list[Any]:
    """The (chunk id, source, text) set one process stores for `paths`."""
    settings = Settings(_env_file=None, data_dir=folder, embedding_model=model, redis_url=redis_url)
    resources = Resources(settings)
    try:
        resources.pipeline("served").run([FileSource(p, p.name) for p in paths])
    finally:
        resources.close()
    return stored_chunks(folder, "served")


def holder(job: dict[str, Any], workers: list[WorkerProcess]) -> tuple[WorkerProcess, str] | None:
    """A worker of `workers` holding a file in flight now, with that file's name."""
    by_id = {w.worker_id: w for w in workers}
    for entry in job["files"]:
        if entry["status"] in IN_FLIGHT and entry["worker"] in by_id:
            return by_id[entry["worker"]], entry["name"]
    return None


def wait_for_holder(url: str, job_id: str, workers: list[WorkerProcess]) -> tuple[Any, str]:
    deadline = time.monotonic() + 180
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        found = holder(job, workers)
        if found is not None:
            return found
        assert job["state"] not in ("done", "failed", "partial"), "ended before the kill"
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_a_killed_and_a_stopped_worker_lose_nothing_and_double_nothing(
    server_env: dict[str, str], tmp_path: Path, minilm_path: str, redis_process: RedisProcess
) -> None:
    env = server_env | FAST_RECOVERY | {"QUARRY_WORKERS": "0"}
    server = Process("serve", env, tmp_path / "server.log")
    server.start()
    slow = env | {"QUARRY_FAILPOINTS": "embedding=sleep:1"}  # every file is in flight a while
    workers = [WorkerProcess(slow, tmp_path / f"worker{i}.log") for i in range(3)]
    for worker in workers:
        worker.start()
    paths = mixed_documents(tmp_path / "docs", 24)  # each format twice or more
    try:
        job_id = upload(server.url, paths)
        killed, killed_file = wait_for_holder(server.url, job_id, workers)
        killed.signal(signal.SIGKILL)
        killed.process.wait(10)
        stopped, stopped_file = wait_for_holder(
            server.url, job_id, [w for w in workers if w is not killed]
        )
        stopped.signal(signal.SIGTERM)
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 600
        while True:  # progress stays readable throughout
            response = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10)
            assert response.status_code == 200
            job = response.json()
            seen.append(job["progress"])
            if job["state"] in ("done", "failed", "partial", "cancelled"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert stopped.process.wait(60) == 0, (tmp_path / "worker1.log").read_text()[-2000:]
        time.sleep(2)  # one more reconciler pass for the metrics
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        for worker in workers:
            worker.stop()
        server.stop()

    assert job["state"] == "done", [f["error"] for f in job["files"] if f["error"]]
    assert {f["status"] for f in job["files"]} == {"ingested"}
    assert sum(p["files"] for p in seen[:1]) == len(paths) and len(seen) > 3
    redone = next(f for f in job["files"] if f["name"] == killed_file)
    assert redone["worker"] != killed.worker_id and redone["lost"] >= 1 and redone["attempts"] >= 2
    handed = next(f for f in job["files"] if f["name"] == stopped_file)
    assert handed["status"] == "ingested"
    counters = {
        name: float(line.split()[-1])
        for line in metrics.splitlines()
        for name in ("quarry_ingest_retries_total", "quarry_ingest_handoffs_total")
        if line.startswith(name + " ")
    }
    assert counters["quarry_ingest_retries_total"] >= 1, metrics
    # The killed worker's file was taken back (by the API's reconciler or by the worker the
    # queue redelivered it to): what QuarryWorkerLost alerts on.
    assert counters["quarry_ingest_handoffs_total"] >= 1, metrics

    stored = stored_chunks(tmp_path / "data", "served")
    assert len({chunk_id for chunk_id, _, _ in stored}) == len(stored)  # no duplicates
    expected = clean_run(tmp_path / "clean", paths, minilm_path, redis_process.url)
    assert stored == expected
    assert {source for _, source, _ in stored} == {p.name for p in paths}


def test_redis_stopped_mid_job_loses_no_job(
    tmp_path: Path, minilm_path: str, own_redis: RedisProcess
) -> None:
    """The queue's Redis goes away (and comes back empty): every accepted file is done."""
    env = quarry_env(
        tmp_path / "data",
        minilm_path,
        own_redis.url,
        QUARRY_COLLECTION="served",
        QUARRY_WORKERS="2",
        QUARRY_FAILPOINTS="embedding=sleep:0.5",
        **FAST_RECOVERY,
    )
    server = Process("serve", env, tmp_path / "server.log")
    server.start()
    first = text_files(tmp_path / "first", 16, seed=21)
    second = text_files(tmp_path / "second", 4, seed=22)
    for path in second:
        path.rename(path.with_name("late-" + path.name))
    second = sorted((tmp_path / "second").iterdir())
    try:
        job_id = upload(server.url, first)
        deadline = time.monotonic() + 180
        while True:
            job = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()
            if job["progress"]["files_by_status"].get("ingested", 0) >= 2:
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        own_redis.stop()
        late_id = upload(server.url, second)  # accepted while the queue is down
        time.sleep(4)
        own_redis.start()  # back on its port, with none of its data
        finished = [wait_job(server.url, j, timeout=300) for j in (job_id, late_id)]
    finally:
        server.stop()
    for job in finished:
        assert job["state"] == "done", [f["error"] for f in job["files"] if f["error"]]
    stored = stored_chunks(tmp_path / "data", "served")
    assert {source for _, source, _ in stored} == {p.name for p in first + second}
    assert len({chunk_id for chunk_id, _, _ in stored}) == len(stored)


def test_a_worker_without_a_store_owner_says_what_to_start(tmp_path: Path) -> None:
    env = quarry_env(tmp_path / "data", "unused", "redis://127.0.0.1:1/0")
    result = quarry(env, "worker", timeout=60)
    assert result.returncode == 1
    assert "no server owns the data dir" in result.stderr and "QUARRY_QDRANT_URL" in result.stderr


def test_with_no_workers_files_wait_in_the_queue_and_the_job_says_so(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    env = server_env | FAST_RECOVERY | {"QUARRY_WORKERS": "0"}
    server = Process("serve", env, tmp_path / "server.log")
    server.start()
    try:
        job_id = upload(server.url, text_files(tmp_path / "t", 3))
        time.sleep(2.5)
        job = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert job["state"] == "queued" and job["progress"]["files_by_status"] == {"queued": 3}
        assert "quarry_ingest_files_queued 3.0" in metrics
        worker = WorkerProcess(env, tmp_path / "worker.log")
        worker.start()  # one external worker does it all
        try:
            assert wait_job(server.url, job_id)["state"] == "done"
        finally:
            worker.stop()
    finally:
        server.stop()
