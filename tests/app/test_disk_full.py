"""A full disk is an answer, not a crash: 507 naming the data dir, `/readyz` degraded first,
and work whose writes fail for lack of room waits (never failed), then finishes."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..servers import Process, quarry_env, wait_job
from .test_hardening import text_files, upload


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB filesystem of its own for the data dir (tmpfs; needs root)."""
    folder = tmp_path / "data"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode()[:200]}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path, leave_mb: float) -> Path:
    """Take the filesystem's room down to `leave_mb` (0: until it is full)."""
    filler = folder / "filler.bin"
    with contextlib.suppress(OSError), filler.open("ab", buffering=0) as out:
        while shutil.disk_usage(folder).free > leave_mb * 1e6 + (1 << 20):
            out.write(b"\0" * (1 << 20))
        if leave_mb == 0:
            while True:
                out.write(b"\0" * 4096)
    return filler


def _ready(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/readyz", timeout=10).json()
    return answer


def test_a_full_disk_is_refused_early_and_waited_out(
    small_disk: Path, tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    env = quarry_env(
        small_disk,
        minilm_path,
        redis_process.url,
        QUARRY_COLLECTION="served",
        QUARRY_MIN_FREE_MB="4",
        QUARRY_RECONCILE_S="1",
        QUARRY_WORKER_RETRY_S="1",
        QUARRY_WORKER_RETRY_MAX_S="2",
    )
    server = Process("serve", env, tmp_path / "server.log")
    server.start()
    try:
        assert _ready(server.url)["checks"]["disk"]["ok"] is True
        filler = _fill(small_disk, leave_mb=6)
        disk = _ready(server.url)["checks"]["disk"]
        assert _ready(server.url)["status"] == "degraded" and not disk["ok"]
        assert str(small_disk) in disk["reason"]
        big = tmp_path / "big.txt"
        big.write_text("The owl and the vole. " * 150_000, encoding="utf-8")  # 3.3 MB
        refused = httpx.post(
            f"{server.url}/v1/documents", files=[("files", ("big.txt", big.read_bytes()))]
        )
        assert refused.status_code == 507, refused.text
        error = refused.json()["error"]
        assert error["code"] == "insufficient_storage" and str(small_disk) in error["message"]
        assert not any((small_disk / "jobs").glob("*/files/*"))  # nothing half-written

        # Accepted work, then the disk fills under it: it waits, then it finishes.
        slow = Process(
            "serve",
            env | {"QUARRY_FAILPOINTS": "parsing=sleep:3"},
            tmp_path / "server2.log",
        )
        server.stop()
        slow.start()
        server = slow
        paths = text_files(tmp_path / "docs", 2)
        job_id = upload(server.url, paths)
        _fill(small_disk, leave_mb=0)
        ready = _ready(server.url)
        assert ready["status"] == "degraded" and not ready["checks"]["disk"]["ok"]
        until = time.monotonic() + 10  # its writes fail meanwhile: it waits, never fails
        while time.monotonic() < until:
            job = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()
            assert job["state"] not in ("failed", "partial", "done"), job
            time.sleep(0.5)
        assert (small_disk / "jobs" / job_id / "files").is_dir()  # nothing acknowledged lost
        filler.unlink()
        job = wait_job(server.url, job_id, timeout=180)
        assert job["state"] == "done", [f["error"] for f in job["files"]]
        assert _ready(server.url)["status"] == "ready"
    finally:
        server.stop()


def test_the_store_waits_for_room_instead_of_touching_a_full_disk(small_disk: Path) -> None:
    """qdrant-edge maps its files sparse: a page first written on a full disk would kill
    the process (SIGBUS). A new collection, or a write, on a nearly full disk is refused
    as a full disk (the caller waits), and goes in once there is room."""
    from retrieval.edge_store import WRITE_RESERVE_BYTES, EdgeStore
    from retrieval.errors import StoreFullError
    from retrieval.models import CollectionRecipe

    store = EdgeStore(small_disk / "qdrant")
    recipe = CollectionRecipe("m", 4, "", revision="r")
    store.ensure_collection("kept", recipe)
    filler = _fill(small_disk, leave_mb=WRITE_RESERVE_BYTES / 2e6)
    for attempt in (lambda: store.ensure_collection("new", recipe), lambda: _write(store)):
        with pytest.raises(StoreFullError) as info:
            attempt()
        assert info.value.status == 507 and "disk is full" in info.value.message
    filler.unlink()
    store.ensure_collection("new", recipe)
    _write(store)
    assert store.count("kept") == 1 and store.count("new") == 0
    store.close()


def _write(store: Any) -> None:
    import numpy as np

    from retrieval.models import ChunkRecord, chunk_id

    vector = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    store.upsert("kept", [ChunkRecord(chunk_id("d", 0), vector, {"text": "t"})])
