"""The model's lanes on a CPU: one single-core forward per core, side by side.

One forward spread over every core splits each operator into equal shares, one per core,
and waits for the last: when anything else runs on one of those cores (a parse process, the
API, Redis), every operator waits for the share that was pushed aside, and the whole model
runs at the speed of its busiest core. On this 2-core machine (`bench/lanes.py`,
docs/benchmarks.md) one busy process made ONNX Runtime's two-thread forwards 1.6 times as
slow (2.2 times with its threads spin-waiting, as they do by default); two one-thread
forwards side by side were as fast alone (6.8 s against 7.0 s for the same 32 batches) and
1.46 times as slow beside it; torch's were 2.7 and 1.5 times as slow. So batches are
spread over `count` lanes, each a forward on one core, and a lane that is slowed holds back
only its own batch.

Ingest batches and query batches are handed to two pools of `count` threads each, so a
query's batches never queue behind ingest batches in a pool; both then take turns at the
`PriorityGate`, where a waiting query goes first. A call of one batch runs on its caller's
thread.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, cast

from embedding.priority import Priority, PriorityGate

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpus(root: Path = CGROUP) -> float | None:
    """The CPUs a cgroup quota grants this process (a container's CPU limit, as
    Kubernetes sets it), or None when there is none: cgroup v2's `cpu.max`, else v1's
    `cpu.cfs_quota_us` over `cpu.cfs_period_us`."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cores(root: Path = CGROUP) -> int:
    """The cores this process may keep busy: its affinity (a cpuset), and no more than its
    cgroup's CPU quota allows (rounded up)."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    quota = cgroup_cpus(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def lanes_of(embedder: object) -> int:
    """Model calls `embedder` runs at once: the `lanes` its type declares, else one."""
    if not hasattr(type(embedder), "lanes"):
        return 1
    return max(1, int(cast(Any, embedder).lanes))


class Lanes:
    """Runs model calls `count` at a time, queries first."""

    def __init__(self, count: int = 1) -> None:
        self.count = max(1, count)
        self.gate = PriorityGate(self.count)
        self._pools: dict[Priority, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self._inside = threading.local()  # set on a thread running a call

    def run(self, calls: Sequence[Callable[[], None]], priority: Priority) -> None:
        """Each call in a turn of its own, spread over the lanes. Every call has ended or
        been dropped when this returns; after the first error, calls not yet started are
        dropped and that error is raised."""
        if self.count == 1 or len(calls) == 1 or self._nested:
            for call in calls:  # (a call that runs calls itself runs them in its own turn)
                self._turn(call, priority)
            return
        pool = self._pool(priority)
        futures = [pool.submit(self._turn, call, priority) for call in calls]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        wait(pending)  # none is left writing into its caller's rows
        for future in futures:
            if not future.cancelled():
                future.result()

    @property
    def _nested(self) -> bool:
        """This thread is running a call already (it holds a turn)."""
        return bool(getattr(self._inside, "yes", False))

    def _turn(self, call: Callable[[], None], priority: Priority) -> None:
        if self._nested:
            call()
            return
        with self.gate.turn(priority):
            self._inside.yes = True
            try:
                call()
            finally:
                self._inside.yes = False

    def _pool(self, priority: Priority) -> ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.get(priority)
            if pool is None:
                name = f"model-lane-{priority.name.lower()}"
                pool = self._pools[priority] = ThreadPoolExecutor(self.count, name)
            return pool
