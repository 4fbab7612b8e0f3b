"""The reconciler's hand-on of queue records, against a real Redis and SAQ's own queue."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from saq.job import Status

from ingest.job_queue import IngestQueue, connect, file_key


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
