"""One delivery of one file from the queue: parse, chunk, embed, store, record how it went.

Delivery is at-least-once, so this is idempotent: a file already finished is not redone, a
file another live process holds is left to it, and a file whose holder died is taken over
(`ingest.leases`: after `MAX_LOST` deaths it is failed as a dead letter instead of killing
more workers); the pipeline's deterministic chunk ids make a redone file end exactly as a
clean run would.
A job ends when its last file does: whoever finishes that file settles the job.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from redis.exceptions import RedisError

from embedding.errors import QuarryError
from ingest.failpoints import failpoint
from ingest.file_tracker import FileTracker, LeaseLost
from ingest.job_store import FileJobStore
from ingest.jobs import FileProgress, Job
from ingest.leases import Holder, take_over
from ingest.models import Stopped
from ingest.originals import Originals
from ingest.pipeline import IngestPipeline
from ingest.sources import FileSource, document_id

log = logging.getLogger(__name__)

MAX_UNEXPECTED = 3  # the same unexpected failure this often in a row fails the file
# Retry codes that are not a dependency's outage: a bug, a 4xx answer, a wrong recipe.
UNEXPECTED_CODES = frozenset(
    {"internal_error", "invalid_input", "recipe_mismatch", "not_found", "store_rejected"}
)
PipelineFactory = Callable[[str, "FileTracker", bool], IngestPipeline]


class RetryLater(Exception):
    """The file could not be done now for a reason outside it (store, model, a worker)."""


def dependency_failure(exc: BaseException) -> bool:
    """A dependency's outage (connection refused, a timeout, a 5xx): wait it out. Anything
    else (a bug, a 4xx from the store) is unexpected, and retried only a few times."""
    if isinstance(exc, QuarryError):
        return exc.status >= 500 and exc.code not in UNEXPECTED_CODES
    if isinstance(exc, RedisError | httpx.TransportError | TimeoutError | ConnectionError):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError)


class FileWorker:
    """Processes the files the queue delivers; shared by every slot of a worker process."""

    def __init__(
        self,
        store: FileJobStore,
        pipelines: PipelineFactory,
        originals: Originals | None,
        on_settled: Callable[[Job], None] = lambda job: None,
        *,
        holder: Holder | None = None,
        lease_s: float = 45.0,
        on_handoff: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.pipelines = pipelines
        self.originals = originals
        self.on_settled = on_settled  # a job this worker ended (optimize its collection)
        self.on_handoff = on_handoff  # a file taken back from a holder that died
        self.holder = holder or Holder.me()
        self.lease_s = lease_s
        self._working: set[tuple[str, int]] = set()  # the files this process works on now
        self._working_lock = threading.Lock()

    def _finish_if_done(self, job_id: str) -> None:
        settled = finish_if_done(self.store, self.originals, job_id)
        if settled is not None:
            self.on_settled(settled)

    def _claim(self, job_id: str, index: int, holder: Holder) -> tuple[Job, FileProgress] | str:
        """Take file `index` for this process (a compare-and-set under the job's lock), or
        say why not: its outcome when it has one, `held` when a live holder has it."""
        seen = self.store.read_file(job_id, index)  # unlocked: most files are free
        taken = None
        if seen is not None and seen.held:
            taken = take_over(self.store, job_id, index, self.lease_s)
        if taken is not None:
            self.on_handoff()
        if taken == "dead_letter":
            self._finish_if_done(job_id)
            return "dead_letter"
        with self.store.locked(job_id):
            job = self.store.record(job_id)
            if job is None or job.finished or index >= len(job.files):
                return "gone"
            entry = self.store.file(job, index)
            if entry.finished:
                outcome: str = entry.status
            elif entry.held and not self._abandoned(entry):
                return "held"
            elif job.cancel_requested:
                entry.status, entry.error = "cancelled", None
                entry.version += 1
                self.store.save_file(job_id, index, entry)
                outcome = "cancelled"
            else:
                holder.claim(entry, self.lease_s)
                entry.status, entry.error = "parsing", None
                entry.attempts += 1
                entry.started_at = entry.started_at or time.time()
                entry.version += 1
                self.store.save_file(job_id, index, entry)
                return job, entry
        self._finish_if_done(job_id)
        return outcome

    def _abandoned(self, entry: FileProgress) -> bool:
        """A claim of this very process that nothing here works on any more (an attempt
        that ended in an error even its hand-back could not record, a full disk say):
        `process` lets one attempt per file run here, and this is it."""
        return entry.host == self.holder.host and entry.pid == self.holder.pid

    def process(
        self,
        job_id: str,
        index: int,
        worker_id: str,
        stopping: threading.Event,
        started: Callable[[FileTracker], None] = lambda tracker: None,
    ) -> str:
        """Work on file `index` of job `job_id`; returns how it ended (`dead_letter` when
        it was given up on, `held` when another live process holds it).

        Raises:
            RetryLater: a dependency failed; the queue delivers the file again later.
            Stopped: the worker is stopping; the file is handed back, untouched.
        """
        holder = Holder(self.holder.host, self.holder.pid, worker_id or self.holder.name)
        with self._working_lock:
            if (job_id, index) in self._working:
                return "held"  # delivered twice to this process: one attempt is enough
            self._working.add((job_id, index))
        try:
            return self._attempt(job_id, index, holder, stopping, started)
        finally:
            with self._working_lock:
                self._working.discard((job_id, index))

    def _attempt(
        self,
        job_id: str,
        index: int,
        holder: Holder,
        stopping: threading.Event,
        started: Callable[[FileTracker], None],
    ) -> str:
        claimed = self._claim(job_id, index, holder)
        if isinstance(claimed, str):
            return claimed
        job, entry = claimed
        failpoint("after_claim")
        staged = self.store.root / job_id / "files" / entry.staged
        tracker = FileTracker(self.store, job_id, index, entry, stopping, self.lease_s)
        if not staged.is_file():
            error = {"code": "missing", "message": f"{entry.name}: its staged copy is gone"}
            return self._end(tracker, "failed", error)
        started(tracker)
        source = FileSource(staged, display=entry.name, metadata=job.metadata, seq=entry.seq)
        try:
            self.pipelines(job.collection, tracker, job.force).run([source])
        except LeaseLost:
            log.warning("%s: taken over by another process; this attempt stops", entry.name)
            return "held"
        except Stopped:
            if not stopping.is_set():  # cancelled
                return self._end(tracker, "cancelled", None)
            entry.status = "queued"  # handed back: another worker starts it afresh
            entry.release()
            tracker.save(force=True)
            raise
        except Exception as exc:  # the store, the model, or a bug
            if not isinstance(exc, QuarryError) and not dependency_failure(exc):
                log.exception("%s: unexpected failure", entry.name)
            message = (
                exc.message if isinstance(exc, QuarryError) else f"{type(exc).__name__}: {exc}"
            )
            code = getattr(exc, "code", "internal_error")
            return self._retry(tracker, code, message, dependency_failure(exc))
        if entry.status == "retrying":
            error = entry.error or {"code": "internal_error", "message": "retrying"}
            dependency = error.get("code") not in UNEXPECTED_CODES
            return self._retry(tracker, error["code"], error["message"], dependency)
        if not entry.finished:  # never claimed done without the pipeline saying so
            return self._retry(tracker, "internal_error", f"{entry.name}: no outcome", False)
        self._finish_if_done(job_id)  # (the outcome's write ended the hold)
        return entry.status

    def _retry(self, tracker: FileTracker, code: str, message: str, dependency: bool) -> str:
        """A dependency's failure waits (RetryLater, backing off, for as long as it takes);
        an unexpected one is tried `MAX_UNEXPECTED` times, then the file fails with it."""
        entry = tracker.entry
        entry.failures = 0 if dependency else entry.failures + 1
        if entry.failures >= MAX_UNEXPECTED:
            error = {
                "code": code if code not in ("retrying", "") else "internal_error",
                "message": f"{message} (the same unexpected failure {entry.failures} times "
                "in a row; not tried again: retry the job once it is fixed)",
            }
            return self._end(tracker, "failed", error)
        entry.status = "retrying"
        entry.error = {"code": code, "message": message}
        entry.release()
        tracker.save(force=True)
        raise RetryLater(message)

    def _end(self, tracker: FileTracker, status: str, error: dict[str, str] | None) -> str:
        entry = tracker.entry
        entry.status, entry.error = status, error
        entry.release()
        tracker.save(force=True)
        self._finish_if_done(tracker.job_id)
        return status


def finish_if_done(store: FileJobStore, originals: Originals | None, job_id: str) -> Job | None:
    """Settle the job when every file has ended: keep the originals of stored files and
    move failed ones to `failed/`, then save its final record, then drop the staging
    folder (in that order: whoever reads the final record finds the originals kept, and a
    crash in between is settled again by the next pass). Returns the job when this call
    ended it."""
    record = store.record(job_id)
    if record is None or record.finished or not store.all_files_ended(record):
        return None  # the usual case, decided without the lock and with few reads
    with store.locked(job_id):
        job = store.get(job_id)
        if job is None or job.finished or not all(f.finished for f in job.files):
            return None
        keep_files(store.root, originals, job)
        job.settle()
        job.version += 1
        store.save(job)
        shutil.rmtree(store.root / job.id / "files", ignore_errors=True)
        return job


def keep_files(root: Path, originals: Originals | None, job: Job) -> None:
    folder = root / job.id / "files"
    failed_dir = root / job.id / "failed"
    for entry in job.files:
        staged = folder / entry.staged if entry.staged else None
        if staged is None or not staged.exists():
            continue
        if entry.status in ("ingested", "unchanged") and originals is not None:
            originals.keep(staged, document_id(entry.name, staged.read_bytes()))
        elif entry.status == "failed":
            failed_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(staged, failed_dir / entry.staged)
