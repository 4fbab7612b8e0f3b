"""The `quarry worker` processes a server on a Qdrant server starts (QUARRY_WORKERS).

With the embedded store the server ingests in-process instead (it owns the store and the
model). These children write to the Qdrant server directly and, when the model runs here,
embed through this server's `/v1/embeddings`: one copy of the model, batched across
workers. A child that dies is restarted (backing off when it keeps dying). The children get
SIGTERM when the server stops (they finish or hand back their files) and SIGKILL when it
dies (Linux's parent-death signal): without their store's owner they could finish nothing,
and the queue's sweep hands their files to the next server's workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


PARENT_ENV = "QUARRY_SUPERVISOR_PID"


def die_with_parent() -> None:
    """In a supervised worker: take SIGKILL when the supervising server dies (Linux's
    parent-death signal), set by the child itself at start. A `preexec_fn` would do it
    between fork and exec, which can deadlock a child of a multi-threaded parent."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the server's stop does
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # it died before the signal was armed
        os._exit(1)


class WorkerSupervisor:
    """Starts `count` worker processes with `env`, restarts those that die, stops them all."""

    def __init__(self, count: int, concurrency: int, env: dict[str, str], grace_s: float) -> None:
        self.count = count
        self.concurrency = concurrency
        self.env = env
        self.grace_s = grace_s
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * count
        self.restarts = 0
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def _spawn(self, slot: int) -> None:
        command = [
            sys.executable,
            "-m",
            "app.cli",
            "worker",
            "--concurrency",
            str(self.concurrency),
        ]
        env = self.env | {PARENT_ENV: str(os.getpid())}
        self.processes[slot] = subprocess.Popen(command, env=env, start_new_session=False)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(30)

    def _watch(self) -> None:
        # The children are started from this thread, which lives as long as the supervisor:
        # the parent-death signal fires when the thread that forked a child ends.
        with self._lock:
            for slot in range(self.count):
                self._spawn(slot)
        log.info("started %d ingestion worker process(es)", self.count)
        self._started.set()
        backoff = [1.0] * self.count
        due = [0.0] * self.count  # when a dead worker's slot is started again
        while not self._stopping.wait(0.5):
            with self._lock:
                for slot, process in enumerate(self.processes):
                    if process is None or process.poll() is None or self._stopping.is_set():
                        continue
                    now = time.monotonic()
                    if not due[slot]:
                        log.warning(
                            "ingestion worker %d exited (code %s); restarting it in %.0f s",
                            process.pid,
                            process.returncode,
                            backoff[slot],
                        )
                        due[slot] = now + backoff[slot]
                        backoff[slot] = min(backoff[slot] * 2, 30.0)
                    elif now >= due[slot]:
                        due[slot] = 0.0
                        self.restarts += 1
                        self._spawn(slot)

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self.processes if p is not None and p.poll() is None]

    def stop(self) -> None:
        """SIGTERM every worker (they finish or hand back their files), then SIGKILL any
        still running after the grace period."""
        self._stopping.set()
        with self._lock:
            running = [p for p in self.processes if p is not None and p.poll() is None]
            for process in running:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + 20
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._thread.join(5)
