"""Quarry's own processes for tests: `quarry serve` and `quarry ui` on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# A SIGKILL'd worker's file is handed on within about 5 s, not 30 s.
FAST_RECOVERY = {
    "QUARRY_WORKER_HEARTBEAT_S": "3",
    "QUARRY_WORKER_SWEEP_S": "2",
    "QUARRY_WORKER_GRACE_S": "20",
    "QUARRY_RECONCILE_S": "1",
}


# ONNX exports are named by the weights they come from: every test's data dir shares them
# (a server exports MiniLM once for the whole run, not once per test).
ENGINE_DIR = str(Path(tempfile.gettempdir()) / f"quarry-test-engines-{os.getuid()}")


def quarry_env(data_dir: Path, model: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUARRY_")}
    env |= {
        "QUARRY_ENGINE_DIR": ENGINE_DIR,
        "QUARRY_DATA_DIR": str(data_dir),
        "QUARRY_EMBEDDING_MODEL": model,
        "QUARRY_REDIS_URL": redis_url,
        "QUARRY_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
        "QUARRY_WORKERS": "1",  # a server's supervised worker; tests that need more say so
        **extra,
    }
    return env


class Process:
    """One `quarry <command>` process; `start` returns once `ready_path` answers 200."""

    def __init__(
        self,
        command: str | list[str],
        env: dict[str, str],
        log: Path,
        ready_path: str = "/readyz",
    ) -> None:
        self.port = free_port()
        self.command = [command] if isinstance(command, str) else command
        self.env = env
        self.log = log
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting (start several, then `wait_ready` each)."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *self.command, "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 120) -> None:
        assert self.process is not None
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

    def pause(self) -> None:
        """SIGSTOP: the process holds its port and connections but answers nothing (hung)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 30) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused process cannot exit
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class WorkerProcess(Process):
    """One `quarry worker` process (it serves no port: it only takes files from the queue)."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 1) -> None:
        super().__init__(["worker", "--concurrency", str(concurrency)], env, log)

    def launch(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    start = launch  # nothing to wait for

    @property
    def worker_id(self) -> str:
        """The id the worker records on the files it holds (`<host>-<pid>`)."""
        assert self.process is not None
        return f"{socket.gethostname()}-{self.process.pid}"

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60) -> None:
        super().stop(timeout)


def wait_job(
    url: str, job_id: str, timeout: float = 300, every_s: float = 0.2, **headers: str
) -> dict[str, Any]:
    """Poll a job until it ends."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = httpx.get(
            f"{url}/v1/jobs/{job_id}", timeout=10, headers=headers
        ).json()
        if job["state"] in ("done", "failed", "partial", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(every_s)


def stored_chunks(data_dir: Path, collection: str) -> list[tuple[str, str, str]]:
    """Every stored (chunk id, source, text) of a collection, read from the embedded store."""
    from retrieval.edge_store import EdgeStore

    store = EdgeStore(data_dir / "qdrant")
    try:
        return sorted(
            (hit.chunk_id, hit.source, hit.text)
            for doc in store.documents(collection)
            for hit in store.chunks(collection, doc.doc_id)
        )
    finally:
        store.close()


def wait_for_log(log: Path, marker: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while marker not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{marker!r} never logged:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def quarry(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run one `quarry ...` command to its end; its output is captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def embedding_nodes(folder: Path, model: str, count: int, **extra: str) -> list[Process]:
    """`count` running `quarry serve --embeddings-only` processes (started in parallel)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = quarry_env(folder, model, "redis://127.0.0.1:1/0", **extra)
    nodes = [
        Process(["serve", "--embeddings-only"], env, folder / f"node{i}.log") for i in range(count)
    ]
    for node in nodes:
        node.launch()
    for node in nodes:
        node.wait_ready()
    return nodes


def stored_vectors(data_dir: Path, collection: str) -> dict[str, tuple[str, Any]]:
    """Every stored chunk id with its text and vector, read from the embedded store."""
    import numpy as np

    from retrieval.edge_store import EdgeStore

    store = EdgeStore(data_dir / "qdrant")
    try:
        found: dict[str, tuple[str, Any]] = {}
        for doc in store.documents(collection):
            hits = store.chunks(collection, doc.doc_id)
            points = store._shard(collection).retrieve(
                [hit.chunk_id for hit in hits], with_payload=True, with_vector=True
            )
            for point in points:
                vector = point.vector
                if isinstance(vector, dict):  # named vectors: the full dense one
                    vector = vector["full"] if "full" in vector else vector[""]
                text = (point.payload or {})["text"]
                found[str(point.id)] = (text, np.asarray(vector, dtype=np.float32))
        return found
    finally:
        store.close()


REPO = Path(__file__).resolve().parents[1]


class Nginx:
    """Debian's nginx running `deploy/nginx/embeddings.conf` in front of `servers`."""

    def __init__(self, folder: Path, servers: list[str], read_timeout_s: int = 60) -> None:
        import re
        import shutil

        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        site = (REPO / "deploy" / "nginx" / "embeddings.conf").read_text()
        upstreams = "".join(
            f"    server {s.removeprefix('http://')} max_fails=2 fail_timeout=10s;\n"
            for s in servers
        )
        site, swapped = re.subn(r"    server embeddings:\d+ [^\n]*\n", upstreams, site)
        assert swapped == 1, "the upstream line of deploy/nginx/embeddings.conf moved"
        site = site.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        site, timed = re.subn(
            r"proxy_read_timeout \d+s;", f"proxy_read_timeout {read_timeout_s}s;", site
        )
        assert timed == 1, "the read timeout of deploy/nginx/embeddings.conf moved"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "site.conf").write_text(site)
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = " ".join(
            f"{kind}_temp_path {folder / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (folder / "nginx.conf").write_text(
            f"{user}worker_processes 1;\npid {folder / 'nginx.pid'};\n"
            f"error_log {folder / 'error.log'} warn;\nevents {{}}\n"
            f"http {{\n  access_log off;\n  {temp}\n  include {folder / 'site.conf'};\n}}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = str(self.folder / "nginx.conf")
        check = subprocess.run(
            [self.binary, "-t", "-p", str(self.folder), "-c", conf, "-e", "stderr"],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.folder), "-c", conf, "-e", "stderr", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "stderr.log").open("ab"),
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(self.url + "/healthz", timeout=2)
                return
            except httpx.HTTPError:
                assert self.process.poll() is None, (self.folder / "stderr.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
