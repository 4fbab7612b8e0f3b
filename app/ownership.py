"""One owner per data dir: the process holding the embedded store and the embedded Redis.

qdrant-edge's shard and the valkey server under the data dir may be opened by one process
only (as qdrant-client's local mode locks its folder). The owner holds an exclusive,
non-blocking lock for its lifetime; a server owner also writes `server.json` with its
address, so that `quarry ingest | search | docs | stats` go through its HTTP API instead.
The kernel drops the lock when the owner dies, even by SIGKILL: no stale lock survives.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from embedding.errors import QuarryError
from ingest.job_store import read_json

LOCK_FILE = ".owner.lock"
OWNER_FILE = "owner.json"
ENDPOINT_FILE = "server.json"


class DataDirBusyError(QuarryError):
    """Another live process owns the data dir; the message names it."""

    code = "data_dir_busy"
    status = 503


def describe_owner(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "another process"
    where = f" at {owner['url']}" if owner.get("url") else ""
    return f"{owner.get('role', 'a process')} (pid {owner.get('pid', '?')}){where}"


class DataDirClaim:
    """The exclusive claim on a data dir, taken once and held until `release`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._lock = FileLock(str(data_dir / LOCK_FILE), timeout=0, thread_local=False)
        self.held = False

    def acquire(self, role: str, url: str | None = None) -> None:
        """Raises DataDirBusyError naming the owner when another process holds it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout as exc:
            owner = current_owner(self.data_dir)
            raise DataDirBusyError(
                f"the data dir {self.data_dir} is in use by {describe_owner(owner)}; "
                "stop it first, or point this process at another QUARRY_DATA_DIR",
                detail={"data_dir": str(self.data_dir), "owner": owner},
            ) from exc
        self.held = True
        info = {"pid": os.getpid(), "role": role, "url": url, "since": time.time()}
        (self.data_dir / OWNER_FILE).write_text(json.dumps(info), encoding="utf-8")
        endpoint = self.data_dir / ENDPOINT_FILE
        if url:
            endpoint.write_text(json.dumps(info), encoding="utf-8")
        else:
            endpoint.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        (self.data_dir / ENDPOINT_FILE).unlink(missing_ok=True)
        (self.data_dir / OWNER_FILE).unlink(missing_ok=True)
        self._lock.release()
        self.held = False


def is_claimed(data_dir: Path) -> bool:
    """True while a live process holds the data dir (tried without taking it for long)."""
    if not (data_dir / LOCK_FILE).exists():
        return False
    probe = FileLock(str(data_dir / LOCK_FILE), timeout=0, thread_local=False)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


def current_owner(data_dir: Path) -> dict[str, Any] | None:
    return read_json(data_dir / OWNER_FILE)


def running_server(data_dir: Path) -> str | None:
    """The URL of the live server that owns `data_dir`, if one does."""
    if not is_claimed(data_dir):
        return None
    endpoint = read_json(data_dir / ENDPOINT_FILE)
    url = endpoint.get("url") if endpoint else None
    return str(url) if url else None


def worker_credential(data_dir: Path, create: bool = False) -> str | None:
    """The data dir's own credential for `quarry worker`s handing batches to the store's
    owner (`/v1/internal/...`): made by the owner at start, readable only by processes that
    share the data dir (mode 0600); never one of the clients' keys."""
    path = data_dir / "worker-credential"
    if create:
        data_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token)
        os.replace(tmp, path)
        return token
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
