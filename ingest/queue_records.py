"""Changes to a file's queue record that only apply to the record as it was read.

Two parties hand on a record whose worker went silent: SAQ's sweep (in every worker) and
the API's reconciler. Each reads the record, decides, then writes. Unguarded, one acting on
what it read a moment ago overwrites what the other has just done: the sweep aborted the
fresh record the reconciler had queued (and its worker's healthy attempt was cancelled and
run again). So every such change is a compare-and-set, Redis's optimistic lock: WATCH the
record, check it still reads as it did, write in MULTI/EXEC; a record that moved on (a new
delivery, a heartbeat, the other party's hand-on) is left alone. Delivery stays
at-least-once; the job state on disk decides what is redone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError
from saq.job import TERMINAL_STATUSES, Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now as now_ms

log = logging.getLogger(__name__)

# SAQ's own sweep script: take the sweep lock (one sweeper at a time, every `lock` s), then
# read the active list and each record in it.
_ACTIVE_RECORDS = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""


async def if_unchanged(
    queue: RedisQueue, job_id: str, seen: bytes | None, change: Callable[[Pipeline], Any]
) -> bool:
    """Apply `change` (queued in one MULTI) only if record `job_id` still reads `seen`;
    returns whether it was applied."""
    redis: Any = queue.redis
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(job_id)
            if await pipe.get(job_id) != seen:
                return False
            pipe.multi()
            change(pipe)
            await pipe.execute()
            return True
        except WatchError:  # written meanwhile
            return False


def ended(queue: RedisQueue, job: Job, status: Status, error: str) -> Callable[[Pipeline], Any]:
    """The change that ends `job` (as SAQ's `finish` does) and drops its abort flag: a
    fresh record may then be enqueued under its key."""
    job.status, job.error = status, error
    job.completed = job.touched = now_ms()

    def change(pipe: Pipeline) -> None:
        pipe.lrem(queue.namespace("active"), 1, job.id)
        pipe.zrem(queue.namespace("incomplete"), job.id)
        if job.ttl > 0:
            pipe.setex(job.id, job.ttl, queue.serialize(job))
        elif job.ttl == 0:
            pipe.set(job.id, queue.serialize(job))
        else:
            pipe.delete(job.id)
        pipe.delete(job.abort_id)

    return change


def queued_again(queue: RedisQueue, job: Job, error: str) -> Callable[[Pipeline], Any]:
    """The change that puts `job` back in the queue at once (as SAQ's `retry` does, without
    a back-off: a lost worker is not the file's fault)."""
    job.status, job.error = Status.QUEUED, error
    job.completed = job.started = job.progress = 0
    job.touched = now_ms()

    def change(pipe: Pipeline) -> None:
        pipe.lrem(queue.namespace("active"), 1, job.id)
        pipe.lrem(queue.namespace("queued"), 1, job.id)
        pipe.zadd(queue.namespace("incomplete"), {job.id: job.scheduled})
        pipe.rpush(queue.namespace("queued"), job.id)
        pipe.set(job.id, queue.serialize(job))
        pipe.delete(job.abort_id)

    return change


def _off_the_list(queue: RedisQueue, job_id: str, job: Job | None) -> Callable[[Pipeline], Any]:
    def change(pipe: Pipeline) -> None:
        pipe.lrem(queue.namespace("active"), 1, job_id)
        if job is None:  # (an ended record is no longer in `incomplete`)
            pipe.zrem(queue.namespace("incomplete"), job_id)

    return change


async def sweep(queue: RedisQueue, lock: int, error: str) -> list[str]:
    """SAQ's sweep as compare-and-sets: each record in the active list that is not running
    (its worker silent past its heartbeat, or never marked active) goes back to the queue,
    or ends when its attempts are spent (the reconciler then gives it a fresh record);
    terminal or missing ones leave the active list. A record changed since it was read is
    someone else's now. Unlike SAQ's, it never aborts: a worker that was only slow keeps
    its attempt, and the job state's lease decides which attempt counts."""
    redis: Any = queue.redis
    script = redis.register_script(_ACTIVE_RECORDS)
    found = await script(keys=[queue.namespace("sweep"), queue.namespace("active")], args=[lock])
    swept: list[str] = []
    for raw_id, seen in found or []:
        job_id = raw_id.decode("utf-8")
        job = queue.deserialize(seen) if seen else None
        if job is None or job.status in TERMINAL_STATUSES:  # not running: off the list,
            if await if_unchanged(queue, job_id, seen, _off_the_list(queue, job_id, job)):
                swept.append(job_id)  # unless a fresh record took its place meanwhile
            continue
        if job.status == Status.ACTIVE and not job.stuck:
            continue
        if job.retryable:
            change = queued_again(queue, job, error)
        else:
            change = ended(queue, job, Status.ABORTED, error)
        if await if_unchanged(queue, job_id, seen, change):
            log.info("swept %s (%s): %s", job_id, error, job.status)
            swept.append(job_id)
    return swept
