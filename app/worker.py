"""A worker: takes files from the ingestion queue and processes them (`quarry worker`).

Each delivery runs `FileWorker.process` on a thread while the task heartbeats the queue
every third of QUARRY_WORKER_HEARTBEAT_S. SIGTERM (or SIGINT) stops taking files and lets
the current ones finish for QUARRY_WORKER_GRACE_S; a file still running then is stopped
(its parse process killed) and handed back to the queue untouched. A SIGKILL'd worker's
files stop heartbeating: a live worker's sweep hands them on within QUARRY_WORKER_HEARTBEAT_S
+ QUARRY_WORKER_SWEEP_S (25 s by default), and the API's reconciler does as soon as the
file's lease says its holder is gone; both hand a record on only as they read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from redis.exceptions import RedisError
from saq import Worker
from saq.types import Context

from app.resources import Resources
from embedding.coalescing import CoalescingEmbedder
from ingest.chunking import Chunker
from ingest.file_worker import FileTracker, FileWorker, RetryLater
from ingest.job_queue import TASK, connect, count, queue_name
from ingest.job_store import FileJobStore
from ingest.jobs import Job
from ingest.leases import Holder
from ingest.originals import Originals
from ingest.pipeline import IngestPipeline

log = logging.getLogger(__name__)

HAND_BACK_S = 15.0  # how long a stopped file may take to hand itself back


class _OutageFilter(logging.Filter):
    """A Redis outage is one line per failed call, not a traceback each (SAQ's upkeep and
    dequeue loops retry on their own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        outage = RedisError | ConnectionError | TimeoutError
        if record.exc_info and isinstance(record.exc_info[1], outage):
            record.msg = f"{record.getMessage()}: Redis unreachable ({record.exc_info[1]})"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def quiet_outages() -> None:
    for name in ("saq", "asyncio"):
        logging.getLogger(name).addFilter(_OutageFilter())


def worker_id() -> str:
    """`<host>-<pid>` (SAQ splits worker keys on colons)."""
    return f"{socket.gethostname()}-{os.getpid()}"


class IngestWorker:
    """The SAQ worker of one process, processing up to `concurrency` files at once."""

    def __init__(
        self,
        resources: Resources,
        concurrency: int,
        name: str | None = None,
        grace_s: int | None = None,
    ) -> None:
        self.resources = resources
        settings = resources.settings
        self.id = name or worker_id()
        self.heartbeat_s = settings.worker_heartbeat_s
        self._chunker_lock = threading.Lock()
        self._shared_chunker: Chunker | None = None
        self.files = FileWorker(
            FileJobStore(settings.jobs_dir),
            self._pipeline,
            Originals(settings.originals_dir),
            on_settled=self._optimize,
            holder=Holder.me(self.id),
            lease_s=settings.lease_s,
            on_handoff=self._handed_on,
        )
        self._handoffs = 0  # taken over in a slot's thread, counted on the loop
        self._handoffs_lock = threading.Lock()
        # Files in flight share model batches (a short file alone is a two-text batch).
        self.embedder = CoalescingEmbedder(
            lambda: resources.embedder, max_items=settings.batch_max_items
        )
        name = queue_name(settings.queue_name, settings.data_dir)
        self.queue = connect(resources.redis_url(), name)
        self.saq = Worker(
            self.queue,
            functions=[(TASK, self.ingest_file)],
            id=self.id,
            concurrency=concurrency,
            timers={"sweep": settings.worker_sweep_s, "abort": 1, "schedule": 1, "worker_info": 5},
            dequeue_timeout=1,
            shutdown_grace_period_s=settings.worker_grace_s if grace_s is None else grace_s,
            cancellation_hard_deadline_s=HAND_BACK_S,
            metadata={"host": socket.gethostname(), "pid": os.getpid()},
        )

    def _pipeline(self, collection: str, tracker: FileTracker, force: bool) -> IngestPipeline:
        self.resources.check_recipe_early(collection)
        chunker = self._chunker()
        return self.resources.pipeline(  # parse threads are new for every file
            collection,
            tracker,
            force=force,
            optimize=False,
            chunker=lambda: chunker,
            embedder=self.embedder,
        )

    def _chunker(self) -> Chunker:
        """One chunker for every slot, kept across files (a tokenizer loads slowly; the
        chunker gives each thread its own copy of it)."""
        with self._chunker_lock:
            if self._shared_chunker is None:
                self._shared_chunker = self.resources.chunker()
            return self._shared_chunker

    def warm_up(self) -> None:
        """Start the parse processes and load the tokenizer before the first file arrives,
        so a worker's first file costs what any other does."""
        try:
            with tempfile.TemporaryDirectory() as folder:
                sample = Path(folder) / "warm-up.txt"
                sample.write_text("Warm-up.", encoding="utf-8")
                self.resources.parse_pool.parse(sample, sample.name)
            self._chunker()
        except Exception as exc:  # the first real file reports what is wrong
            log.warning("worker warm-up failed: %s", exc)

    def _optimize(self, job: Job) -> None:
        """Once per job, by the worker that ended it: segments merge for fast search."""
        if any(f.status == "ingested" for f in job.files):
            try:
                self.resources.ingest_store.optimize(job.collection)
            except Exception as exc:  # the data is stored; this only speeds search up
                log.warning("cannot optimize %r: %s", job.collection, exc)

    async def _count(self, counter: str) -> None:
        try:
            await count(self.queue, counter)
        except Exception as exc:  # a counter is not worth failing a file for
            log.warning("cannot count %s: %s", counter, exc)

    def _handed_on(self) -> None:
        with self._handoffs_lock:
            self._handoffs += 1

    async def _count_handoffs(self) -> None:
        with self._handoffs_lock:
            taken, self._handoffs = self._handoffs, 0
        for _ in range(taken):
            await self._count("handoffs")

    async def ingest_file(self, ctx: Context, *, job_id: str, index: int) -> str:
        """The queue's task: one file, heartbeating while it runs."""
        job = ctx["job"]
        if job.attempts > 1:
            await self._count("retries")
        stopping = threading.Event()
        held: list[FileTracker] = []
        work = asyncio.ensure_future(
            asyncio.to_thread(self.files.process, job_id, index, self.id, stopping, held.append)
        )
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=self.heartbeat_s / 3)
                if not work.done():
                    if held:  # the file's lease, in the job state: the truth
                        with contextlib.suppress(Exception):
                            await asyncio.to_thread(held[0].renew)
                    try:
                        await job.update()  # the queue's heartbeat: transport only
                    except Exception as exc:
                        log.warning("heartbeat of %s failed: %s", job.key, exc)
        except asyncio.CancelledError:  # stopping: hand the file back
            stopping.set()
            with contextlib.suppress(Exception):  # Stopped, most likely: handed back
                await asyncio.wait_for(asyncio.shield(work), HAND_BACK_S)
            raise
        await self._count_handoffs()
        try:
            outcome = work.result()
        except RetryLater as exc:
            log.warning("file %d of job %s will be retried: %s", index, job_id, exc)
            raise
        if outcome == "dead_letter":
            await self._count("dead_letters")
        return outcome

    async def run(self, warm_up: bool = True) -> None:
        """Work until stopped (SIGTERM, SIGINT or `stop`)."""
        quiet_outages()
        if warm_up:
            await asyncio.to_thread(self.warm_up)
        log.info("worker %s taking files from the queue", self.id)
        # Every slot's file runs on a thread of this loop's executor: one thread per slot.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(self.saq.concurrency + 2, thread_name_prefix="ingest-slot")
        )
        try:
            await self.saq.start()
        finally:
            self.embedder.close()
            await self.queue.disconnect()

    def stop_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ask a worker running on `loop` (another thread) to stop."""
        loop.call_soon_threadsafe(self.saq.event.set)


class InProcessWorker:
    """A worker on a thread of the API process: for an app whose workers could not reach
    it (an ASGI app run in-process, as tests do); `quarry serve` starts real processes."""

    def __init__(self, resources: Resources, concurrency: int) -> None:
        # No grace: it stops with its app, handing its files back to the queue at once.
        self.worker = IngestWorker(
            resources, concurrency, name=f"{worker_id()}-in-process", grace_s=0
        )
        self.worker.saq.SIGNALS = []  # the main thread's signals are the server's
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="ingest-worker", daemon=True)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            # The server's own parse pool and tokenizer load on the first file.
            self._loop.run_until_complete(self.worker.run(warm_up=False))
        finally:
            self._loop.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self.worker.stop_soon(self._loop)
        self._thread.join(timeout)
