"""The model's lanes on a CPU: one single-core forward per core, side by side.

One forward spread over every core splits each operator into equal shares, one per core,
and waits for the last: when anything else runs on one of those cores (a parse process, the
API, Redis), every operator waits for the share that was pushed aside, and the whole model
runs at the speed of its busiest core. On this 2-core machine one busy process made ONNX
Runtime's two-thread forwards 2.2 times as slow; two one-thread forwards side by side were
faster alone (6.2 s against 7.3 s for the same 32 batches) and lost only a third beside the
same process (docs/benchmarks.md). So ingestion's batches are spread over `count` lanes,
each a forward on one core, and a lane that is slowed holds back only its own batch.

A query runs on the caller's thread in a lane of its own turn, ahead of waiting ingest
batches (the `PriorityGate`); it never queues behind them in the lanes' pool.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

from embedding.priority import Priority, PriorityGate


def usable_cores() -> int:
    """The cores this process may run on (its affinity, a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class Lanes:
    """Runs model calls `count` at a time, queries first."""

    def __init__(self, count: int = 1) -> None:
        self.count = max(1, count)
        self.gate = PriorityGate(self.count)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def run(self, calls: Sequence[Callable[[], None]], priority: Priority) -> None:
        """Each call in a turn of its own; several ingest calls spread over the lanes. Every
        call has ended when this returns; the first error, if any, is raised."""
        if self.count == 1 or len(calls) == 1 or priority is Priority.QUERY:
            for call in calls:
                self._turn(call, priority)
            return
        futures = [self._lanes().submit(self._turn, call, priority) for call in calls]
        wait(futures)  # none is left writing into its caller's rows
        for future in futures:
            future.result()

    def _turn(self, call: Callable[[], None], priority: Priority) -> None:
        with self.gate.turn(priority):
            call()

    def _lanes(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="model-lane")
            return self._pool
