"""The API's side of ingestion jobs: submit, read, cancel, retry, and keep the queue honest.

The API only stages, records and enqueues; queue consumers (the server's own, or `quarry
worker` processes) do the work. The job state on disk is the truth and the queue only
transport: a reconciler pass (every few seconds, and at start) takes over files whose
holder died (`ingest.leases`), gives every other unfinished file without a live queue
record a fresh one (an upload accepted while Redis was down, a Redis that lost its data, a
sweeper that died mid-way, a record the queue ended), and settles jobs whose files have all
ended. The queue's own verdicts never fail a file. Nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, BinaryIO

from redis.exceptions import RedisError

from embedding.errors import QuarryError
from ingest.failpoints import failpoint
from ingest.file_worker import finish_if_done
from ingest.job_queue import IngestQueue, QueueSnapshot, file_key
from ingest.job_store import FileJobStore
from ingest.jobs import Job
from ingest.leases import take_over
from ingest.originals import Originals
from ingest.uploads import Rejection, load_manifest, stage_upload
from ingest.versions import VersionCounter
from retrieval.errors import NotFoundError

log = logging.getLogger(__name__)

ENQUEUE_WAIT_S = 2.0
JOB_ID = re.compile(r"[0-9a-f]{32}")  # anything else names no job (and never a folder)


class JobStateError(QuarryError):
    code = "job_state_conflict"
    status = 409


class JobService:
    """Jobs as the API sees them; the queue is reached through `queue`."""

    def __init__(
        self,
        store: FileJobStore,
        queue: IngestQueue,
        originals: Originals | None,
        on_finish: Callable[[Job], None] | None = None,
        lease_s: float = 45.0,
        free_floor_bytes: int = 0,
        retention_s: float = 7 * 24 * 3600,
    ) -> None:
        self.store = store
        self.lease_s = lease_s
        self.free_floor_bytes = free_floor_bytes
        self.retention_s = retention_s
        self.versions = VersionCounter(store.root.parent)
        self._expired_at = 0.0
        self.queue = queue
        self.originals = originals
        self._on_finish = on_finish
        self.finished: Counter[str] = Counter()
        self.snapshot = QueueSnapshot()
        self._watching: set[str] = set()
        self._unfinished = 0

    # -- commands -----------------------------------------------------------------------
    async def upload(
        self,
        collection: str,
        metadata: dict[str, Any],
        max_file_bytes: int,
        files: list[tuple[str | None, BinaryIO]],
        force: bool = False,
    ) -> tuple[Job, list[Rejection]]:
        """Stage an upload's files durably, give each source its version, record the job
        and queue it: once this returns, the upload is acknowledged and never lost.

        Raises:
            UploadRejected: no file could be accepted.
            DiskFullError: the data dir has no room for it (nothing is kept).
        """
        job, rejected = await asyncio.to_thread(
            stage_upload,
            self.store.root,
            collection,
            metadata,
            max_file_bytes,
            files,
            force=force,
            versions=self.versions,
            free_floor_bytes=self.free_floor_bytes,
        )
        await self.submit(job)
        return job, rejected

    async def submit(self, job: Job) -> None:
        """Record the job, then queue its files; an unreachable queue only delays them."""
        await asyncio.to_thread(self._record, job)
        self._watching.add(job.id)
        self._unfinished += 1
        await self._enqueue(job)

    async def _enqueue(self, job: Job) -> None:
        """Queue the job's unfinished files; a queue that does not answer within a couple of
        seconds does not hold up the upload (the reconciler queues them later)."""
        todo = [i for i, f in enumerate(job.files) if not f.finished]
        try:
            await asyncio.wait_for(self.queue.enqueue(job.id, todo), ENQUEUE_WAIT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            reason = str(exc) or "no answer"
            log.warning("job %s: cannot reach the queue (%s); it is queued later", job.id, reason)

    def _record(self, job: Job) -> None:
        with self.store.locked(job.id):
            self.store.save(job)

    def get(self, job_id: str) -> Job | None:
        """The job as it stands (a read-only view: cached while nothing of it changes)."""
        return self.store.view(job_id) if JOB_ID.fullmatch(job_id) else None

    def recent(self, limit: int = 20) -> list[Job]:
        return self.store.recent(limit)

    def cancel(self, job_id: str) -> Job:
        """Stop a job: files not started end `cancelled`; running ones stop within a second
        (their parse worker is killed); files already stored stay stored."""
        self._require(job_id)  # before any lock: an unknown id never becomes a folder
        with self.store.locked(job_id):
            job = self._require(job_id)
            if job.finished:
                raise JobStateError(
                    f"job {job_id} has already ended ({job.state}); nothing to cancel",
                    detail={"job_id": job_id, "state": job.state},
                )
            job.cancel_requested = True
            job.version += 1
            self.store.save(job)
            for index, entry in enumerate(job.files):
                if entry.status in ("queued", "retrying"):
                    entry.status, entry.error = "cancelled", None
                    entry.version += 1
                    self.store.save_file(job_id, index, entry)
        self._settle(job_id)
        return self._require(job_id)

    async def retry(self, job_id: str) -> Job:
        """Run the failed files of an ended job again, from their kept originals."""
        job = await asyncio.to_thread(self._reset_failed, job_id)
        self._watching.add(job_id)
        await self._enqueue(job)
        return await asyncio.to_thread(self._require, job_id)

    def _reset_failed(self, job_id: str) -> Job:
        self._require(job_id)
        with self.store.locked(job_id):
            job = self._require(job_id)
            if not job.finished:
                raise JobStateError(
                    f"job {job_id} is still {job.state}; retry it once it has ended",
                    detail={"job_id": job_id, "state": job.state},
                )
            failed_dir = self.store.root / job.id / "failed"
            again = [
                i
                for i, f in enumerate(job.files)
                if f.status == "failed" and (failed_dir / f.staged).exists()
            ]
            if not again:
                raise JobStateError(
                    f"job {job_id} has no failed files to retry",
                    detail={"job_id": job_id, "state": job.state},
                )
            files_dir = self.store.root / job.id / "files"
            files_dir.mkdir(parents=True, exist_ok=True)
            for index in again:
                entry = job.files[index]
                shutil.move(failed_dir / entry.staged, files_dir / entry.staged)
                entry.reset()
                self.store.save_file(job_id, index, entry)
            job.state, job.error, job.finished_at = "queued", None, None
            job.force, job.cancel_requested = True, False
            job.version += 1
            self.store.save(job)
        return job

    @property
    def depth(self) -> int:
        """Jobs waiting or running (as of the last reconciler pass)."""
        return self._unfinished

    # -- the reconciler -------------------------------------------------------------------
    async def reconcile(self) -> None:
        """One pass: settle ended jobs, re-enqueue lost files, fail dead letters."""
        unfinished = await asyncio.to_thread(self.store.unfinished)
        self._watching.update(unfinished)
        live = 0
        for job_id in list(self._watching):
            job = await asyncio.to_thread(self.store.view, job_id)
            if job is None:
                job = await asyncio.to_thread(self._adopt, job_id)
            if job is None or job.finished:
                self._ended(job_id, job)
                continue
            if all(f.finished for f in job.files):
                self._ended(job_id, await asyncio.to_thread(self._settle, job_id))
                continue
            live += 1
            await self._keep_moving(job)
        self._unfinished = live
        self.snapshot = await self.queue.snapshot()
        if time.monotonic() - self._expired_at > 600:  # ended jobs past their retention
            self._expired_at = time.monotonic()
            await asyncio.to_thread(self.store.expire, self.retention_s)

    async def _keep_moving(self, job: Job) -> None:
        """Give every unfinished file an owner: a live holder keeps its file; a dead
        holder's file is taken over; a free file without a live queue record gets one."""
        free: list[int] = []
        for index, entry in enumerate(job.files):
            if entry.finished:
                continue
            if entry.held:
                outcome = await asyncio.to_thread(
                    take_over, self.store, job.id, index, self.lease_s
                )
                if outcome is None:
                    continue  # a live holder has it
                log.warning("job %s file %d: its holder is gone; handed on", job.id, index)
                failpoint("handoff_after_takeover")
                await self.queue.count("handoffs")
                if outcome == "dead_letter":
                    await self.queue.count("dead_letters")
                    await asyncio.to_thread(self._settle, job.id)
                    continue
            free.append(index)
        if not free:
            return
        records = await self.queue.records([file_key(job.id, i) for i in free])
        stale = [i for i in free if not self.queue.pending(records[file_key(job.id, i)])]
        again = await self.queue.requeue(job.id, stale) if stale else []
        if again:
            log.warning(
                "job %s: queued file(s) %s again: the queue had no live record of them",
                job.id,
                ", ".join(map(str, again)),
            )
        for _ in again:  # each is delivered again
            await self.queue.count("retries")

    def _adopt(self, job_id: str) -> Job | None:
        """A job committed (its manifest written) by an API that died before recording it;
        a folder that never got a manifest is an upload never accepted, dropped after an
        hour (it may still be arriving)."""
        folder = self.store.root / job_id
        manifest = load_manifest(folder)
        if manifest is not None:
            with self.store.locked(job_id):
                if self.store.get(job_id) is None:
                    self.store.save(manifest)
            return self.store.get(job_id)
        try:
            if time.time() - folder.stat().st_mtime > 3600:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass
        return None

    def _settle(self, job_id: str) -> Job | None:
        return finish_if_done(self.store, self.originals, job_id)

    def _ended(self, job_id: str, job: Job | None) -> None:
        if job_id not in self._watching:
            return
        self._watching.discard(job_id)
        if job is not None and job.finished:
            self.finished[job.state] += 1
            if self._on_finish is not None:
                self._on_finish(job)

    def _require(self, job_id: str) -> Job:
        job = self.store.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise NotFoundError(f"no job {job_id!r}", detail={"job_id": job_id})
        return job

    async def run_reconciler(self, interval_s: float) -> None:
        """Reconcile forever (cancel the task to stop); a failed pass is logged, not fatal."""
        while True:
            try:
                await self.reconcile()
            except (RedisError, OSError) as exc:
                self.snapshot = QueueSnapshot(
                    reachable=False,
                    retries=self.snapshot.retries,
                    dead_letters=self.snapshot.dead_letters,
                )
                log.warning("the queue's Redis is unreachable (%s); retrying", exc)
            except Exception:
                log.exception("job reconciler pass failed")
            await asyncio.sleep(interval_s)
