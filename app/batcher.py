"""Dynamic micro-batching: concurrent requests share one model call, off the event loop.

Requests queue up with a key (what must be equal to share a call: collection,
instruction, top-k...). One loop takes what is queued, waits a small bounded time for
more when the batch is small, and runs each key's merged items on a dedicated thread.
While that runs, new requests gather, so batches grow with load by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from embedding.errors import OverloadedError

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)  # one caller's request: found and removed by identity
class _Request(Generic[K, T, R]):
    key: K
    items: Sequence[T]
    future: asyncio.Future[list[R]]


class MicroBatcher(Generic[K, T, R]):
    """Merges concurrent `submit` calls into calls of `run(key, items) -> results`.

    `max_items=1` turns merging off (each request runs alone, on the same thread).
    """

    def __init__(
        self,
        name: str,
        run: Callable[[K, list[T]], list[R]],
        *,
        max_items: int = 64,
        max_wait_s: float = 0.002,
        on_batch: Callable[[int, int], None] | None = None,
        max_depth: int | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self.max_depth = max_depth  # items that may wait; past it, 429 at once
        self.refused = 0
        self._seconds_per_item = 0.01  # the model's recent pace, for Retry-After
        self._pending: list[_Request[K, T, R]] = []
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batch-{name}")

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for request in self._pending:
            if not request.future.done():
                request.future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def depth(self) -> int:
        """Items waiting for the model, not counting those whose caller has gone."""
        return sum(len(r.items) for r in self._pending if not r.future.done())

    async def submit(self, key: K, items: Sequence[T]) -> list[R]:
        if self._arrived is None:
            raise RuntimeError(f"batcher {self.name!r} is not started")
        depth = self.depth
        if self.max_depth is not None and depth and depth + len(items) > self.max_depth:
            self.refused += 1
            wait = max(1, math.ceil(depth * self._seconds_per_item))
            raise OverloadedError(
                f"{self.name}: {depth} texts are already waiting for the model (the bound is "
                f"{self.max_depth}); retry in {wait} s",
                retry_after_s=wait,
                detail={"queued": depth, "bound": self.max_depth},
            )
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        request = _Request(key, items, future)
        self._pending.append(request)
        self._arrived.set()
        try:
            return await future
        finally:
            if future.cancelled() and request in self._pending:  # the caller gave up
                self._pending.remove(request)

    async def _loop(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            if not self._pending:
                continue
            deadline = loop.time() + self.max_wait_s
            while self.depth < self.max_items and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
            taken = self._take()
            if self._pending:
                self._arrived.set()  # the rest goes in the next round, without waiting
            groups: dict[K, list[_Request[K, T, R]]] = {}
            for request in taken:
                groups.setdefault(request.key, []).append(request)
            for key, requests in groups.items():
                await self._execute(loop, key, requests)

    def _take(self) -> list[_Request[K, T, R]]:
        taken: list[_Request[K, T, R]] = []
        count = 0
        while self._pending:
            if taken and count + len(self._pending[0].items) > self.max_items:
                break
            request = self._pending.pop(0)
            taken.append(request)
            count += len(request.items)
        return taken

    async def _execute(
        self, loop: asyncio.AbstractEventLoop, key: K, requests: list[_Request[K, T, R]]
    ) -> None:
        live = [r for r in requests if not r.future.done()]  # drop cancelled callers
        if not live:
            return
        items = [item for r in live for item in r.items]
        started = loop.time()
        try:
            results: list[Any] = await loop.run_in_executor(self._executor, self._run, key, items)
        except Exception as exc:
            for request in live:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        pace = (loop.time() - started) / max(len(items), 1)
        self._seconds_per_item = 0.8 * self._seconds_per_item + 0.2 * pace
        if self._on_batch is not None:
            self._on_batch(len(live), len(items))
        start = 0
        for request in live:
            end = start + len(request.items)
            if not request.future.done():
                request.future.set_result(results[start:end])
            start = end


class AdmissionGate:
    """A bound on items in the model's hands for work that is not micro-batched (rerank):
    past it, `OverloadedError` (429 with Retry-After) at once."""

    def __init__(self, name: str, max_depth: int) -> None:
        self.name = name
        self.max_depth = max_depth
        self.depth = 0
        self.refused = 0

    @contextlib.contextmanager
    def admit(self, items: int) -> Iterator[None]:
        if self.depth and self.depth + items > self.max_depth:
            self.refused += 1
            raise OverloadedError(
                f"{self.name}: {self.depth} texts are already with the model (the bound is "
                f"{self.max_depth}); retry in a second",
                detail={"queued": self.depth, "bound": self.max_depth},
            )
        self.depth += items
        try:
            yield
        finally:
            self.depth -= items
