"""The API as a client of embedding servers, when every one of them is out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from ..servers import Process, quarry_env, wait_job


def _wait(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_with_every_server_out_jobs_wait_search_fails_fast_and_readyz_says_why(
    tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    node_env = quarry_env(tmp_path / "node", minilm_path, "redis://127.0.0.1:1/0")
    node = Process(["serve", "--embeddings-only"], node_env, tmp_path / "node.log")
    url = f"{node.url}/v1"  # its port is taken now; the process starts later
    env = quarry_env(
        tmp_path / "data",
        minilm_path,
        redis_process.url.rsplit("/", 1)[0] + "/8",
        QUARRY_EMBEDDING_URLS=url,
        QUARRY_REMOTE_RETRY_S="2",
        QUARRY_REMOTE_HEALTH_INTERVAL_S="0.5",
    )
    api = Process("serve", env, tmp_path / "api.log", ready_path="/healthz")
    api.start()
    try:

        def out_named() -> bool:
            answer = httpx.get(api.url + "/readyz")
            return answer.status_code == 503 and url in answer.text

        _wait(out_named, "readyz 503, naming the server")
        ready = httpx.get(api.url + "/readyz").json()
        assert ready["status"] == "not_ready"
        reason = ready["checks"]["model"]["reason"]
        assert url in reason and "connect" in reason

        sample = tmp_path / "owls.txt"
        sample.write_text("Owls hunt mice at night using silent flight and sharp hearing.")
        response = httpx.post(
            f"{api.url}/v1/documents", files=[("files", (sample.name, sample.read_bytes()))]
        )
        job_id = response.json()["job_id"]

        def retrying() -> bool:
            job = httpx.get(f"{api.url}/v1/jobs/{job_id}").json()
            return bool(job["files"][0]["status"] == "retrying")

        _wait(retrying, "the file waits in retrying, it is not failed")
        job = httpx.get(f"{api.url}/v1/jobs/{job_id}").json()
        assert job["files"][0]["error"]["code"] == "embedding_unavailable"

        node.start()  # a server comes back: the job finishes by itself
        done = wait_job(api.url, job_id, timeout=120)
        assert done["state"] == "done" and done["files"][0]["status"] == "ingested"
        hits = httpx.post(f"{api.url}/v1/search", json={"query": "night birds"}).json()["hits"]
        assert hits[0]["source"] == "owls.txt"

        node.kill()
        _wait(lambda: httpx.get(api.url + "/readyz").status_code == 503, "readyz 503 again")
        started = time.monotonic()
        failed = httpx.post(f"{api.url}/v1/search", json={"query": "something new"})
        assert failed.status_code == 503
        error = failed.json()["error"]
        assert error["code"] == "embedding_unavailable" and url in error["message"]
        assert time.monotonic() - started < 3  # no waiting out retries while all are out
    finally:
        api.stop()
        node.stop()
