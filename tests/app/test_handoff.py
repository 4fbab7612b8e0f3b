"""Every hand-off of a file survives a SIGKILL at each step, and the newest acknowledged
version of a source wins whatever order workers finish in (real processes throughout)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import RedisProcess
from ..servers import FAST_RECOVERY, Process, WorkerProcess, stored_chunks, wait_job
from .test_hardening import text_files, upload
from .test_workers import clean_run, wait_for_holder


def _assert_done_once(job: dict[str, Any], data_dir: Path, paths: list[Path]) -> None:
    assert job["state"] == "done", [f["error"] for f in job["files"] if f["error"]]
    stored = stored_chunks(data_dir, "served")
    assert len({chunk_id for chunk_id, _, _ in stored}) == len(stored)  # nothing doubled
    assert {source for _, source, _ in stored} == {p.name for p in paths}  # nothing lost


@pytest.mark.parametrize("point", ["handoff_after_takeover", "handoff_requeue"])
def test_the_process_handing_a_dead_workers_file_on_may_die_at_any_step(
    point: str, server_env: dict[str, str], tmp_path: Path
) -> None:
    """A worker dies holding a file; the server taking it over dies mid-way (after the
    compare-and-set on the job state, or between ending the stale queue record and writing
    the new one). The next server finishes the job: no file stuck, none doubled."""
    env = server_env | FAST_RECOVERY | {"QUARRY_WORKERS": "0"}
    dying = Process("serve", env | {"QUARRY_FAILPOINTS": f"{point}=kill"}, tmp_path / "s1.log")
    dying.start()
    worker = WorkerProcess(env | {"QUARRY_FAILPOINTS": "embedding=sleep:3"}, tmp_path / "w.log")
    worker.start()
    paths = text_files(tmp_path / "docs", 5)
    second = Process("serve", env | {"QUARRY_WORKERS": "1"}, tmp_path / "s2.log")
    try:
        job_id = upload(dying.url, paths)
        _, held = wait_for_holder(dying.url, job_id, [worker])
        worker.signal(signal.SIGKILL)
        assert worker.process is not None and dying.process is not None
        worker.process.wait(10)
        assert dying.process.wait(60) == -signal.SIGKILL  # died at the failpoint
        second.start()
        job = wait_job(second.url, job_id, timeout=300)
    finally:
        worker.stop()
        dying.stop()
        second.stop()
    _assert_done_once(job, tmp_path / "data", paths)
    redone = next(f for f in job["files"] if f["name"] == held)
    assert redone["lost"] == 1 and redone["attempts"] >= 2


def test_a_worker_killed_right_after_taking_a_file_loses_it_to_no_one(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    env = server_env | FAST_RECOVERY | {"QUARRY_WORKERS": "0"}
    server = Process("serve", env, tmp_path / "server.log")
    server.start()
    doomed = WorkerProcess(env | {"QUARRY_FAILPOINTS": "after_claim=kill"}, tmp_path / "w1.log")
    paths = text_files(tmp_path / "docs", 4)
    try:
        job_id = upload(server.url, paths)
        doomed.start()
        assert doomed.process is not None and doomed.process.wait(60) == -signal.SIGKILL
        taken = WorkerProcess(env, tmp_path / "w2.log")
        taken.start()
        try:
            job = wait_job(server.url, job_id, timeout=300)
        finally:
            taken.stop()
    finally:
        server.stop()
    _assert_done_once(job, tmp_path / "data", paths)
    assert sum(f["lost"] for f in job["files"]) == 1


def test_the_newest_acknowledged_version_wins_a_race_of_clients_workers_and_kills(
    server_env: dict[str, str], tmp_path: Path, minilm_path: str, redis_process: RedisProcess
) -> None:
    """Four clients upload five versions each of the same three sources at once, while the
    server's consumers and an external worker (SIGKILLed mid-way) race to store them."""
    env = server_env | FAST_RECOVERY | {"QUARRY_FAILPOINTS": "embedding=sleep:0.3"}
    server = Process("serve", env, tmp_path / "server.log")
    server.start()
    worker = WorkerProcess(env, tmp_path / "worker.log", concurrency=2)
    worker.start()
    names = ("alpha.txt", "beta.txt", "gamma.txt")
    accepted: list[tuple[str, dict[str, str]]] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        for round_ in range(5):
            texts = {n: f"{n} from client {number}, round {round_}: {n * 3}." for n in names}
            files = [("files", (n, t.encode())) for n, t in texts.items()]
            response = httpx.post(f"{server.url}/v1/documents", files=files, timeout=120)
            assert response.status_code == 202, response.text
            with lock:
                accepted.append((response.json()["job_id"], texts))

    try:
        clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(1.5)
        worker.signal(signal.SIGKILL)  # whatever it held is handed on
        for thread in clients:
            thread.join(120)
        jobs = [(wait_job(server.url, job_id, timeout=600), texts) for job_id, texts in accepted]
    finally:
        worker.stop()
        server.stop()
    assert len(jobs) == 20
    newest: dict[str, tuple[int, str]] = {}
    for job, texts in jobs:
        assert job["state"] == "done", [f["error"] for f in job["files"] if f["error"]]
        for entry in job["files"]:
            assert entry["status"] in ("ingested", "superseded", "unchanged"), entry
            seq, name = entry["seq"], entry["name"]
            if seq > newest.get(name, (0, ""))[0]:
                newest[name] = (seq, texts[name])
    assert len({entry["seq"] for job, _ in jobs for entry in job["files"]}) == 60  # all distinct
    final = tmp_path / "final"
    final.mkdir()
    for name, (_, text) in newest.items():
        (final / name).write_text(text, encoding="utf-8")
    expected = clean_run(
        tmp_path / "clean", sorted(final.iterdir()), minilm_path, redis_process.url
    )
    assert stored_chunks(tmp_path / "data", "served") == expected
