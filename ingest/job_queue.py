"""The ingestion queue: one SAQ job per uploaded file, over Redis; transport only.

Why SAQ: it is asyncio-native (the API and the workers are asyncio programs), a dequeue
moves the job atomically from `queued` to `active` (BLMOVE), a running job heartbeats and a
sweep by any live worker hands a job whose heartbeat stopped (its worker was SIGKILL'd) to
another worker, and retries back off. Delivery is at-least-once; exactly-once *results*
come from the job state on disk (a finished file is never redone) and from idempotent
writes (deterministic chunk ids).

A file's queue key is `<job id>:<n>`: enqueueing a file that is already waiting or running
is a no-op, so the API's reconciler may enqueue whatever it finds unfinished on disk (after
Redis lost its data, say) without ever doubling work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError
from saq import Queue
from saq.job import TERMINAL_STATUSES, Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now as now_ms

from ingest import queue_records
from ingest.failpoints import failpoint

log = logging.getLogger(__name__)

TASK = "ingest_file"
# The queue's attempts of one file before its record ends: a dependency's failures back off
# up to QUARRY_WORKER_RETRY_MAX_S; past this the reconciler gives the file a fresh record,
# so an outage is waited out however long it lasts. A file is only ever failed by the job
# state's own rules (its own fault, repeated unexpected errors, holders that keep dying).
MAX_ATTEMPTS = 1000


def file_key(job_id: str, index: int) -> str:
    return f"{job_id}:{index}"


def queue_name(configured: str, data_dir: Path) -> str:
    """QUARRY_QUEUE_NAME, or one named after the data dir's own id: deployments sharing a
    Redis never take each other's files, and every process sharing the data dir (on any
    machine, wherever it is mounted) finds the same queue."""
    if configured:
        return configured
    data_dir.mkdir(parents=True, exist_ok=True)
    marker = data_dir / "queue-id"
    with contextlib.suppress(FileExistsError), marker.open("x", encoding="utf-8") as handle:
        handle.write(uuid.uuid4().hex[:12])
    for _ in range(50):  # another process may be writing it this instant
        found = marker.read_text(encoding="utf-8").strip()
        if found:
            return f"quarry-ingest-{found}"
        time.sleep(0.01)
    raise RuntimeError(f"{marker} stays empty")


def queued_list(name: str) -> str:
    """The Redis list of waiting files (what KEDA's redis scaler counts)."""
    return f"saq:{name}:queued"


def counter_key(name: str, counter: str) -> str:
    return f"saq:{name}:quarry:{counter}"


async def count(queue: Queue, counter: str) -> None:
    """Add one to one of the queue's counters (`retries`, `dead_letters`, `handoffs`)."""
    await queue.redis.incr(counter_key(queue.name, counter))  # type: ignore[attr-defined]


class ResilientRedisQueue(RedisQueue):
    """A RedisQueue whose dequeue waits out a Redis outage instead of spinning on it, and
    whose sweep hands a silent record on only as it read it (`queue_records.sweep`)."""

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        return await queue_records.sweep(self, lock, self.swept_error_message or "swept")

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Any:
        try:
            return await super().dequeue(timeout, poll_interval)
        except (RedisError, OSError) as exc:
            log.warning("the queue's Redis is unreachable (%s); waiting", exc)
            await asyncio.sleep(1.0)
            return None


def connect(url: str, name: str) -> ResilientRedisQueue:
    client = aioredis.from_url(url, socket_connect_timeout=2.0, socket_timeout=10.0)
    return ResilientRedisQueue(client, name=name, swept_error_message="worker lost")


@dataclass
class QueueSnapshot:
    """What the metrics show: waiting files, each worker's files in flight, counters."""

    reachable: bool = True  # until a pass finds otherwise
    queued: int = 0
    scheduled: int = 0  # waiting out a retry's back-off
    in_flight: dict[str, int] = field(default_factory=dict)
    workers: int = 0
    retries: int = 0
    dead_letters: int = 0
    handoffs: int = 0  # files taken back from a worker that died holding them


class IngestQueue:
    """Enqueues files and reads the queue's state (the API's side of the transport)."""

    def __init__(
        self, queue: Queue, heartbeat_s: float, retry_s: float = 2.0, retry_max_s: float = 60.0
    ) -> None:
        self.queue = queue
        self.heartbeat_s = heartbeat_s
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s

    async def enqueue(self, job_id: str, indexes: list[int]) -> None:
        """Queue each file (a no-op for one already waiting or running).

        Raises:
            RedisError, OSError: Redis is unreachable (the reconciler enqueues them later).
        """
        for index in indexes:
            await self.queue.enqueue(
                TASK,
                key=file_key(job_id, index),
                job_id=job_id,
                index=index,
                timeout=0,  # a file's parse has its own limit; liveness is the heartbeat
                heartbeat=max(1, round(self.heartbeat_s)),
                retries=MAX_ATTEMPTS,
                retry_delay=self.retry_s,
                retry_backoff=self.retry_max_s,
                ttl=24 * 3600,
            )

    async def records(self, keys: list[str]) -> dict[str, Job | None]:
        """Each key's queue record (None: the queue has no record of it)."""
        jobs = await self.queue.jobs(keys) if keys else []
        return dict(zip(keys, jobs, strict=True))

    def pending(self, record: Job | None) -> bool:
        """Whether the queue will deliver this file by itself: it waits (or waits out a
        back-off), or a live worker heartbeats it. Anything else (no record, ended, being
        swept by a sweeper that may have died, a silent delivery) needs a new record."""
        if record is None:
            return False
        if record.status in (Status.NEW, Status.QUEUED):
            return True
        if record.status == Status.ACTIVE:
            silent_ms = now_ms() - (record.touched or record.started or 0)
            return silent_ms <= 2000 * max(self.heartbeat_s, 1.0)
        return False

    async def requeue(self, job_id: str, indexes: list[int]) -> list[int]:
        """Give each file found without a live record a fresh one; returns those queued.

        Each record is read again and ended only as read (a compare-and-set): one the
        queue delivered again by itself, or a sweeper handed on, since it was found stale
        is left alone (ending it would stop a healthy attempt). A worker that was only slow
        keeps its attempt: the file's lease in the job state says which attempt counts. A
        crash between ending and queuing leaves an ended record: the next pass queues it.
        """
        queue: Any = self.queue
        again: list[int] = []
        for index in indexes:
            record_id = queue.job_id(file_key(job_id, index))
            seen = await queue.redis.get(record_id)
            record = queue.deserialize(seen) if seen else None
            if record is not None:
                if self.pending(record):
                    continue
                status = record.status if record.status in TERMINAL_STATUSES else Status.ABORTED
                change = queue_records.ended(queue, record, status, record.error or "handed on")
                if not await queue_records.if_unchanged(queue, record_id, seen, change):
                    continue  # it moved on since it was read: the next pass sees it anew
                failpoint("handoff_requeue")
            again.append(index)
        await self.enqueue(job_id, again)
        return again

    async def snapshot(self) -> QueueSnapshot:
        info = await self.queue.info(jobs=True, limit=10_000)
        in_flight: dict[str, int] = {}
        for job in info.get("jobs", []):
            if job.get("status") == Status.ACTIVE and job.get("worker_id"):
                in_flight[job["worker_id"]] = in_flight.get(job["worker_id"], 0) + 1
        redis = self.queue.redis  # type: ignore[attr-defined]
        name = self.queue.name
        retries, dead, handoffs = await redis.mget(
            counter_key(name, "retries"),
            counter_key(name, "dead_letters"),
            counter_key(name, "handoffs"),
        )
        return QueueSnapshot(
            reachable=True,
            queued=int(info["queued"]),
            scheduled=max(0, int(info["scheduled"])),
            in_flight=in_flight,
            workers=len(info["workers"]),
            retries=int(retries or 0),
            dead_letters=int(dead or 0),
            handoffs=int(handoffs or 0),
        )

    async def count(self, counter: str) -> None:
        await count(self.queue, counter)

    async def close(self) -> None:
        await self.queue.disconnect()
