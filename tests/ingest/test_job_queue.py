"""The reconciler's hand-on of queue records, against a real Redis and SAQ's own queue."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from saq.job import Job, Status
from saq.utils import now as now_ms

from ingest import queue_records
from ingest.job_queue import IngestQueue, connect, file_key, queued_list


def test_requeue_leaves_a_record_that_came_alive_to_its_worker(redis_process: Any) -> None:
    """Between the reconciler finding a file's record stale and re-queuing it, the queue may
    deliver it again by itself. That live delivery must be left alone (ending it stops a
    healthy attempt and runs the file once more); the record still dead is queued again."""

    async def scenario() -> tuple[list[int], int, dict[str, Any]]:
        queue = IngestQueue(connect(redis_process.url, f"requeue-{uuid.uuid4().hex}"), 3.0)
        try:
            await queue.enqueue("job", [0, 1])
            live = await queue.queue.dequeue(timeout=2)
            dead = await queue.queue.dequeue(timeout=2)
            assert live is not None and dead is not None
            await live.update(status=Status.ACTIVE)  # a worker has just taken it
            await queue.queue.finish(dead, Status.ABORTED, error="worker lost")
            both = [live.kwargs["index"], dead.kwargs["index"]]
            again = await queue.requeue("job", both)
            records = await queue.records([file_key("job", i) for i in both])
            return (
                again,
                dead.kwargs["index"],
                {key: record.status if record else None for key, record in records.items()},
            )
        finally:
            await queue.close()

    again, dead_index, statuses = asyncio.run(scenario())
    assert again == [dead_index]
    assert statuses[file_key("job", 1 - dead_index)] == Status.ACTIVE
    assert statuses[file_key("job", dead_index)] == Status.QUEUED


async def _silent(queue: IngestQueue, index: int) -> Job:
    """Deliver file `index` to a worker that then goes silent (SIGKILL'd, as it were)."""
    job = await queue.queue.dequeue(timeout=2)
    assert job is not None and job.kwargs["index"] == index
    job.status, job.started = Status.ACTIVE, now_ms() - 60_000
    job.touched, job.attempts = job.started, 1
    await queue.queue.redis.set(job.id, queue.queue.serialize(job))  # type: ignore[attr-defined]
    return job


def test_the_sweep_hands_a_silent_record_on_and_leaves_a_live_one(redis_process: Any) -> None:
    async def scenario() -> tuple[list[str], dict[str, Any], list[bytes]]:
        queue = IngestQueue(connect(redis_process.url, f"sweep-{uuid.uuid4().hex}"), 3.0)
        try:
            await queue.enqueue("job", [0])
            await _silent(queue, 0)
            await queue.enqueue("job", [1])
            live = await queue.queue.dequeue(timeout=2)
            assert live is not None
            await live.update(status=Status.ACTIVE)  # heartbeating
            swept = await queue.queue.sweep(lock=1)
            records = await queue.records([file_key("job", 0), file_key("job", 1)])
            waiting = await queue.queue.redis.lrange(queued_list(queue.queue.name), 0, -1)  # type: ignore[attr-defined]
            return swept, {k: r.status if r else None for k, r in records.items()}, waiting
        finally:
            await queue.close()

    swept, statuses, waiting = asyncio.run(scenario())
    assert [key.rsplit(":", 2)[-2:] for key in swept] == [["job", "0"]]
    assert statuses == {file_key("job", 0): Status.QUEUED, file_key("job", 1): Status.ACTIVE}
    assert [w.decode().rsplit(":", 2)[-2:] for w in waiting] == [["job", "0"]]


def test_a_hand_on_decided_on_an_old_read_changes_nothing(redis_process: Any) -> None:
    """The sweep read a silent record; the reconciler then handed it on and a worker took
    the fresh record. The sweep's hand-on, decided on what it read, must not apply: it
    would overwrite the fresh record and stop that worker's healthy attempt."""

    async def scenario() -> tuple[bool, Any, Any]:
        queue = IngestQueue(connect(redis_process.url, f"race-{uuid.uuid4().hex}"), 3.0)
        saq: Any = queue.queue
        try:
            await queue.enqueue("job", [0])
            silent = await _silent(queue, 0)
            read_by_sweep = await saq.redis.get(silent.id)
            assert await queue.requeue("job", [0]) == [0]  # the reconciler, meanwhile
            fresh = await saq.dequeue(timeout=2)
            await fresh.update(status=Status.ACTIVE)
            stale = saq.deserialize(read_by_sweep)
            change = queue_records.queued_again(saq, stale, "worker lost")
            applied = await queue_records.if_unchanged(saq, silent.id, read_by_sweep, change)
            return applied, await saq.job(file_key("job", 0)), fresh
        finally:
            await queue.close()

    applied, record, fresh = asyncio.run(scenario())
    assert not applied
    assert record.status == Status.ACTIVE and record.started == fresh.started
