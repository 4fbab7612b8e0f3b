"""A lock with two queues: waiting queries take the model before waiting ingest batches."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum


class Priority(IntEnum):
    QUERY = 0  # someone is waiting on an HTTP answer
    BULK = 1  # ingestion: throughput matters, a few hundred ms do not


class PriorityGate:
    """`capacity` holders at a time (one per model lane); when one lets go, the most urgent
    waiter goes next.

    Ingestion calls the model in small batches, taking a turn for each, so a query that
    arrives during a large ingest waits for at most the first lane's batch to end.
    """

    def __init__(self, capacity: int = 1) -> None:
        self._cond = threading.Condition()
        self._capacity = max(1, capacity)
        self._holders = 0
        self._waiting = [0] * len(Priority)

    @contextmanager
    def turn(self, priority: Priority) -> Iterator[None]:
        with self._cond:
            self._waiting[priority] += 1
            try:
                while self._holders >= self._capacity or any(
                    self._waiting[p] for p in range(priority)
                ):
                    self._cond.wait()
            finally:
                self._waiting[priority] -= 1
            self._holders += 1
        try:
            yield
        finally:
            with self._cond:
                self._holders -= 1
                self._cond.notify_all()
