"""One delivery of one file from the queue: parse, chunk, embed, store, record how it went.

Delivery is at-least-once, so this is idempotent: a file already finished is not redone; a
file whose last attempt never said how it went (its worker died) is redone, and after
`MAX_LOST` such attempts it is failed as a dead letter instead of killing more workers; the
pipeline's deterministic chunk ids make a redone file end exactly as a clean run would.
A job ends when its last file does: whoever finishes that file settles the job.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from embedding.errors import QuarryError
from ingest.jobs import IN_FLIGHT_FILE_STATES, FileJobStore, FileProgress, Job
from ingest.models import FileError, Stopped
from ingest.originals import Originals
from ingest.pipeline import IngestPipeline, SilentObserver
from ingest.sources import FileSource, document_id

log = logging.getLogger(__name__)

MAX_LOST = 3
PipelineFactory = Callable[[str, "FileTracker", bool], IngestPipeline]


class RetryLater(Exception):
    """The file could not be done now for a reason outside it (store, model, a worker)."""


class FileTracker(SilentObserver):
    """An `IngestObserver` for one file: its progress goes to the job store as it moves."""

    def __init__(
        self,
        store: FileJobStore,
        job_id: str,
        index: int,
        entry: FileProgress,
        stopping: threading.Event,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.index = index
        self.entry = entry
        self._stopping = stopping
        self._lock = threading.Lock()
        self._saved_at = 0.0
        self._cancel_checked_at = 0.0

    def save(self, force: bool = False) -> None:
        with self._lock:
            self.entry.version += 1
            now = time.monotonic()
            if force or now - self._saved_at > 0.5:
                self._saved_at = now
                self.store.save_file(self.job_id, self.index, self.entry)

    def file_stage(self, name: str, stage: str, count: int) -> None:
        setattr(self.entry, stage, count)
        self.entry.status = "parsing" if stage in ("parsed", "chunked") else "embedding"
        self.save()

    def file_done(self, name: str, status: str, chunks: int, error: FileError | None) -> None:
        self.entry.status = status
        self.entry.error = {"code": error.code, "message": error.message} if error else None
        self.save(force=True)

    def file_retry(self, name: str, error: FileError) -> None:
        self.entry.status = "retrying"
        self.entry.error = {"code": error.code, "message": error.message}
        self.save(force=True)

    def check(self) -> None:
        if self._stopping.is_set():
            raise Stopped
        now = time.monotonic()
        if now - self._cancel_checked_at > 1.0:  # a cancel is read from the shared state
            self._cancel_checked_at = now
            job = self.store.get(self.job_id)
            if job is None or job.cancel_requested:
                raise Stopped


class FileWorker:
    """Processes the files the queue delivers; shared by every slot of a worker process."""

    def __init__(
        self,
        store: FileJobStore,
        pipelines: PipelineFactory,
        originals: Originals | None,
        on_settled: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self.store = store
        self.pipelines = pipelines
        self.originals = originals
        self.on_settled = on_settled  # a job this worker ended (optimize its collection)

    def _finish_if_done(self, job_id: str) -> None:
        settled = finish_if_done(self.store, self.originals, job_id)
        if settled is not None:
            self.on_settled(settled)

    def process(self, job_id: str, index: int, worker_id: str, stopping: threading.Event) -> str:
        """Work on file `index` of job `job_id`; returns how it ended (`dead_letter` when
        it was given up on).

        Raises:
            RetryLater: a dependency failed; the queue delivers the file again later.
            Stopped: the worker is stopping; the file is handed back, untouched.
        """
        job = self.store.get(job_id)
        if job is None or job.finished or index >= len(job.files):
            return "gone"
        entry = job.files[index]
        if entry.finished:
            self._finish_if_done(job_id)
            return entry.status
        if job.cancel_requested:
            return self._end(job_id, index, entry, "cancelled", None)
        if entry.status in IN_FLIGHT_FILE_STATES:  # its last worker died holding it
            entry.lost += 1
            if entry.lost >= MAX_LOST:
                error = {
                    "code": "worker_lost",
                    "message": f"{entry.name}: the worker processing it died {entry.lost} times "
                    "(killed, or out of memory); it is not tried again",
                }
                self._end(job_id, index, entry, "failed", error)
                return "dead_letter"
        staged = self.store.root / job_id / "files" / entry.staged
        if not staged.is_file():
            error = {"code": "missing", "message": f"{entry.name}: its staged copy is gone"}
            return self._end(job_id, index, entry, "failed", error)
        entry.status, entry.worker, entry.error = "parsing", worker_id, None
        entry.attempts += 1
        entry.started_at = entry.started_at or time.time()
        tracker = FileTracker(self.store, job_id, index, entry, stopping)
        tracker.save(force=True)
        source = FileSource(staged, display=entry.name, metadata=job.metadata)
        try:
            self.pipelines(job.collection, tracker, job.force).run([source])
        except Stopped:
            if not stopping.is_set():  # cancelled
                return self._end(job_id, index, entry, "cancelled", None)
            entry.status = "queued"  # handed back: another worker starts it afresh
            tracker.save(force=True)
            raise
        except Exception as exc:  # the store, the model...: never the file's fault
            if not isinstance(exc, QuarryError):
                log.exception("%s: unexpected failure (will be retried)", entry.name)
            message = (
                exc.message if isinstance(exc, QuarryError) else f"{type(exc).__name__}: {exc}"
            )
            entry.status = "retrying"
            entry.error = {"code": getattr(exc, "code", "internal_error"), "message": message}
            tracker.save(force=True)
            raise RetryLater(message) from exc
        if entry.status == "retrying":
            raise RetryLater(entry.error["message"] if entry.error else "retrying")
        if not entry.finished:  # never claimed done without the pipeline saying so
            entry.status = "retrying"
            entry.error = {"code": "internal_error", "message": f"{entry.name}: no outcome"}
            tracker.save(force=True)
            raise RetryLater(entry.error["message"])
        self._finish_if_done(job_id)
        return entry.status

    def _end(
        self,
        job_id: str,
        index: int,
        entry: FileProgress,
        status: str,
        error: dict[str, str] | None,
    ) -> str:
        entry.status, entry.error = status, error
        entry.version += 1
        self.store.save_file(job_id, index, entry)
        self._finish_if_done(job_id)
        return status


def finish_if_done(store: FileJobStore, originals: Originals | None, job_id: str) -> Job | None:
    """Settle the job when every file has ended: save its final record, keep the
    originals of stored files, move failed ones to `failed/`, drop the staging folder.
    Returns the job when this call ended it."""
    with store.locked(job_id):
        job = store.get(job_id)
        if job is None or job.finished or not all(f.finished for f in job.files):
            return None
        job.settle()
        job.version += 1
        store.save(job)
        clean_up(store.root, originals, job)
        return job


def clean_up(root: Path, originals: Originals | None, job: Job) -> None:
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
    shutil.rmtree(folder, ignore_errors=True)
