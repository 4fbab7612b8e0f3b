"""Micro-batching merges concurrent requests and keeps each caller's results apart."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.batcher import MicroBatcher


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.threads: set[str] = set()

    def run(self, key: str, items: list[int]) -> list[int]:
        self.calls.append((key, list(items)))
        self.threads.add(threading.current_thread().name)
        if any(item < 0 for item in items):
            raise ValueError("negative")
        return [item * 10 for item in items]


async def _fire(batcher: MicroBatcher[str, int, int], requests: list[tuple[str, list[int]]]):  # type: ignore[no-untyped-def]
    batcher.start()
    try:
        return await asyncio.gather(
            *(batcher.submit(key, items) for key, items in requests), return_exceptions=True
        )
    finally:
        await batcher.stop()


def test_concurrent_requests_share_calls_per_key() -> None:
    recorder = Recorder()
    batcher = MicroBatcher("t", recorder.run, max_items=64, max_wait_s=0.01)
    requests = [("a" if i % 2 else "b", [i, i + 100]) for i in range(20)]
    results = asyncio.run(_fire(batcher, requests))
    assert results == [[i * 10, (i + 100) * 10] for i in range(20)]
    assert len(recorder.calls) == 2 and {key for key, _ in recorder.calls} == {"a", "b"}
    assert recorder.threads == {"batch-t_0"}  # never on the event loop's thread


def test_batch_size_is_bounded_and_off_means_one_request_per_call() -> None:
    recorder = Recorder()
    results = asyncio.run(
        _fire(MicroBatcher("t", recorder.run, max_items=5), [("k", [i]) for i in range(12)])
    )
    assert [r[0] for r in results] == [i * 10 for i in range(12)]  # type: ignore[index]
    assert max(len(items) for _, items in recorder.calls) <= 5 and len(recorder.calls) >= 3
    off = Recorder()
    asyncio.run(_fire(MicroBatcher("t", off.run, max_items=1), [("k", [i]) for i in range(6)]))
    assert len(off.calls) == 6


def test_a_failing_batch_fails_only_its_own_callers() -> None:
    recorder = Recorder()
    batcher = MicroBatcher("t", recorder.run, max_items=64, max_wait_s=0.01)
    results = asyncio.run(_fire(batcher, [("bad", [-1]), ("good", [2]), ("bad", [3])]))
    assert isinstance(results[0], ValueError) and isinstance(results[2], ValueError)
    assert results[1] == [20]


def test_submit_before_start_is_an_error() -> None:
    batcher = MicroBatcher("t", Recorder().run)
    with pytest.raises(RuntimeError, match="not started"):
        asyncio.run(batcher.submit("k", [1]))


def test_a_full_queue_refuses_at_once_with_a_retry_after() -> None:
    """Admission control: past the bound a request is refused (429), not queued forever."""
    import time

    from embedding.errors import OverloadedError

    def slow(key: str, items: list[int]) -> list[int]:
        time.sleep(0.3)
        return items

    batcher = MicroBatcher("t", slow, max_items=2, max_wait_s=0.0, max_depth=4)

    async def burst() -> list[object]:
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit("k", [i, i]) for i in range(8)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    started = time.monotonic()
    results = asyncio.run(burst())
    refused = [r for r in results if isinstance(r, OverloadedError)]
    served = [r for r in results if isinstance(r, list)]
    assert refused and served and len(refused) + len(served) == 8
    assert all(r.status == 429 and r.retry_after_s >= 1 for r in refused)
    assert "waiting for the model" in refused[0].message and batcher.refused == len(refused)
    assert time.monotonic() - started < 0.3 * 8  # the refused never waited their turn


def test_a_caller_that_gave_up_is_neither_run_nor_counted() -> None:
    """A client that timed out (and retried elsewhere) leaves nothing in the queue: its
    items are not embedded and do not count toward the 429 bound."""
    release = threading.Event()
    recorder = Recorder()

    def run(key: str, items: list[int]) -> list[int]:
        release.wait(10)
        return recorder.run(key, items)

    async def scenario() -> tuple[int, int, list[int]]:
        batcher = MicroBatcher("t", run, max_items=4, max_wait_s=0)
        batcher.start()
        try:
            busy = asyncio.ensure_future(batcher.submit("k", [1]))  # holds the model
            await asyncio.sleep(0.05)
            abandoned = [asyncio.ensure_future(batcher.submit("k", [i])) for i in (2, 3, 4)]
            await asyncio.sleep(0.05)
            waiting = batcher.depth
            for task in abandoned:
                task.cancel()
            await asyncio.sleep(0.05)
            left = batcher.depth
            kept = [asyncio.ensure_future(batcher.submit("k", [i])) for i in (5, 6, 7, 8)]
            await asyncio.sleep(0.05)
            release.set()
            return waiting, left, [*(await busy), *[r for k in kept for r in await k]]
        finally:
            await batcher.stop()

    waiting, left, results = asyncio.run(scenario())
    assert (waiting, left) == (3, 0)
    assert results == [10, 50, 60, 70, 80]
    # The abandoned items take no room: the next batch is exactly the four that waited.
    assert [items for _, items in recorder.calls] == [[1], [5, 6, 7, 8]]
