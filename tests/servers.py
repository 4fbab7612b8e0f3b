"""Quarry's own processes for tests: `quarry serve` and `quarry ui` on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quarry_env(data_dir: Path, model: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUARRY_")}
    env |= {
        "QUARRY_DATA_DIR": str(data_dir),
        "QUARRY_EMBEDDING_MODEL": model,
        "QUARRY_REDIS_URL": redis_url,
        "QUARRY_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
        **extra,
    }
    return env


class Process:
    """One `quarry <command>` process; `start` returns once `ready_path` answers 200."""

    def __init__(
        self, command: str, env: dict[str, str], log: Path, ready_path: str = "/readyz"
    ) -> None:
        self.port = free_port()
        self.command = command
        self.env = env
        self.log = log
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", self.command, "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
