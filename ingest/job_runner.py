"""Runs ingestion jobs one at a time on a worker thread, and resumes unfinished ones.

A job's staged `files/` folder exists until the job's final state is saved, so on start
every job folder that still has one is queued again. The pipeline is idempotent
(deterministic chunk ids, complete documents skipped, half-written ones redone, replaced
sources pruned), so a resumed job ends with exactly the chunks a clean run would store.

Failures are sorted by whose fault they are: a file's own (encrypted, no text, ...) is
final; a dependency's (store, model, cache, a dead worker) is retried with capped,
jittered backoff for as long as it takes, and the job shows `retrying` with the reason.
A failed file's original is kept under `failed/`, so `retry` needs no new upload.
"""

from __future__ import annotations

import logging
import queue
import random
import shutil
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path

from embedding.errors import QuarryError
from ingest.jobs import Job, JobStore
from ingest.models import FileError, Stopped
from ingest.originals import Originals
from ingest.pipeline import IngestObserver, IngestPipeline
from ingest.sources import FileSource, document_id
from ingest.uploads import load_manifest
from retrieval.errors import NotFoundError

log = logging.getLogger(__name__)

PipelineFactory = Callable[[str, IngestObserver, bool], IngestPipeline]


class JobStateError(QuarryError):
    code = "job_state_conflict"
    status = 409


class JobTracker:
    """An `IngestObserver` that records a job's per-file progress and persists it."""

    def __init__(self, job: Job, persist: Callable[[Job], None], stopping: threading.Event):
        self.job = job
        self._persist = persist
        self._stopping = stopping
        self._lock = threading.Lock()
        self._saved_at = 0.0
        self._by_name = {f.name: f for f in job.files}

    def _changed(self, force: bool = False) -> None:
        self.job.version += 1
        now = time.monotonic()
        if force or now - self._saved_at > 0.5:
            self._saved_at = now
            self._persist(self.job)

    def file_stage(self, name: str, stage: str, count: int) -> None:
        with self._lock:
            entry = self._by_name.get(name)
            if entry is not None:
                setattr(entry, stage, count)
                entry.status = "parsing" if stage in ("parsed", "chunked") else "embedding"
                self._changed()

    def file_done(self, name: str, status: str, chunks: int, error: FileError | None) -> None:
        with self._lock:
            entry = self._by_name.get(name)
            if entry is not None:
                entry.status = status
                entry.error = {"code": error.code, "message": error.message} if error else None
                self._changed(force=True)

    def file_retry(self, name: str, error: FileError) -> None:
        with self._lock:
            entry = self._by_name.get(name)
            if entry is not None:
                entry.status = "retrying"
                entry.error = {"code": error.code, "message": error.message}
                self._changed(force=True)

    def check(self) -> None:
        if self._stopping.is_set() or self.job.cancel_requested:
            raise Stopped

    def chunks_queued(self, count: int) -> None:
        pass

    def chunks_embedded(self, count: int) -> None:
        pass

    def chunks_stored(self, count: int) -> None:
        pass


class JobRunner:
    """Queues jobs, runs them in order on one thread, keeps the live ones in memory."""

    def __init__(
        self,
        root: Path,
        store: JobStore,
        pipelines: PipelineFactory,
        on_finish: Callable[[Job], None] | None = None,
        originals: Originals | None = None,
    ) -> None:
        self.root = root
        self.originals = originals
        self.store = store
        self._pipelines = pipelines
        self._on_finish = on_finish
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._live: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.finished: Counter[str] = Counter()
        self.retry_delay = 2.0
        self.max_retry_delay = 60.0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> int:
        """Start the worker after queueing every unfinished job found on disk."""
        resumed = self._resume()
        self._thread = threading.Thread(target=self._work, name="ingest-jobs", daemon=True)
        self._thread.start()
        return resumed

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _resume(self) -> int:
        if not self.root.exists():
            return 0
        resumed = 0
        for folder in sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime):
            if not (folder / "files").exists():
                continue
            manifest = load_manifest(folder)
            if manifest is None:  # died while staging: the upload was never accepted
                shutil.rmtree(folder, ignore_errors=True)
                continue
            job = self._load(manifest.id) or manifest
            if job.finished:  # died after saving the final state, before cleaning up
                self._clean_up(job)
                continue
            job.state = "queued"
            self._save(job)
            self._enqueue(job)
            resumed += 1
        if resumed:
            log.info("resuming %d unfinished ingestion job(s)", resumed)
        return resumed

    # -- queries and commands -----------------------------------------------------------
    def submit(self, job: Job) -> None:
        self._save(job)
        self._enqueue(job)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            live = self._live.get(job_id)
        return live or self._load(job_id)

    def recent(self, limit: int = 20) -> list[Job]:
        with self._lock:
            live = list(self._live.values())
        try:
            stored = self.store.recent(limit)
        except Exception as exc:
            log.warning("cannot list stored jobs: %s", exc)
            stored = []
        merged = {job.id: job for job in stored} | {job.id: job for job in live}
        return sorted(merged.values(), key=lambda j: j.created_at, reverse=True)[:limit]

    def cancel(self, job_id: str) -> Job:
        """Stop a queued, retrying or running job; files already stored stay stored."""
        job = self._require(job_id)
        if job.finished:
            raise JobStateError(
                f"job {job_id} has already ended ({job.state}); nothing to cancel",
                detail={"job_id": job_id, "state": job.state},
            )
        with self._lock:
            job.cancel_requested = True
            job.version += 1
            running = job.state == "running"
        self._save(job)
        if not running:  # the worker will skip it; end it here
            self._finish(job)
        return job

    def retry(self, job_id: str) -> Job:
        """Run the failed files of an ended job again, from their kept originals."""
        job = self._require(job_id)
        if not job.finished:
            raise JobStateError(
                f"job {job_id} is still {job.state}; retry it once it has ended",
                detail={"job_id": job_id, "state": job.state},
            )
        failed_dir = self.root / job.id / "failed"
        again = [f for f in job.files if f.status == "failed" and (failed_dir / f.staged).exists()]
        if not again:
            raise JobStateError(
                f"job {job_id} has no failed files to retry",
                detail={"job_id": job_id, "state": job.state},
            )
        files_dir = self.root / job.id / "files"
        files_dir.mkdir(parents=True, exist_ok=True)
        for entry in again:
            shutil.move(failed_dir / entry.staged, files_dir / entry.staged)
            entry.status, entry.error, entry.attempts = "queued", None, 0
            entry.parsed = entry.chunked = entry.embedded = entry.stored = 0
        job.state, job.error, job.finished_at = "queued", None, None
        job.force, job.cancel_requested = True, False
        job.version += 1
        self.submit(job)
        return job

    @property
    def depth(self) -> int:
        """Jobs waiting or running."""
        with self._lock:
            return sum(1 for job in self._live.values() if not job.finished)

    # -- internals ---------------------------------------------------------------------
    def _require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r}", detail={"job_id": job_id})
        with self._lock:
            return self._live.setdefault(job.id, job)

    def _enqueue(self, job: Job) -> None:
        with self._lock:
            self._live[job.id] = job
            while len(self._live) > 200:
                oldest = next(iter(self._live))
                if not self._live[oldest].finished:
                    break
                self._live.popitem(last=False)
        self._queue.put(job.id)

    def _load(self, job_id: str) -> Job | None:
        try:
            return self.store.get(job_id)
        except Exception as exc:
            log.warning("cannot read job %s: %s", job_id, exc)
            return None

    def _save(self, job: Job) -> None:
        try:
            self.store.save(job)
        except Exception as exc:  # the live copy stays correct; the next save retries
            log.warning("cannot save job %s: %s", job.id, exc)

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self._stopping.is_set():
                return
            with self._lock:
                job = self._live.get(job_id)
            if job is not None and not job.finished and job.state != "running":
                self._run(job)

    def _retry_later(self, job: Job, reason: dict[str, str]) -> None:
        """Something the files do not control failed: keep them and try again later."""
        job.retries += 1
        delay = min(self.retry_delay * 2 ** (job.retries - 1), self.max_retry_delay)
        delay *= random.uniform(0.8, 1.2)
        log.warning("job %s: %s; retrying in %.0f s", job.id, reason["message"], delay)
        job.state = "retrying"
        job.error = {"code": reason["code"], "message": f"{reason['message']} (retrying)"}
        job.version += 1
        self._save(job)
        timer = threading.Timer(delay, self._queue.put, args=(job.id,))
        timer.daemon = True
        timer.start()

    def _run(self, job: Job) -> None:
        with self._lock:  # `cancel` decides under the same lock whether the job runs
            cancelled = job.cancel_requested
            if not cancelled:
                job.state = "running"
        if cancelled:
            self._finish(job)
            return
        folder = self.root / job.id / "files"
        job.started_at, job.finished_at = time.time(), None
        job.attempts += 1
        job.error = None
        job.version += 1
        todo = [f for f in job.files if not f.finished]
        for entry in todo:
            entry.attempts += 1
        self._save(job)
        sources = [
            FileSource(folder / f.staged, display=f.name, metadata=job.metadata) for f in todo
        ]
        tracker = JobTracker(job, self._save, self._stopping)
        try:
            self._pipelines(job.collection, tracker, job.force).run(sources)
        except Stopped:
            if job.cancel_requested:
                self._finish(job)
                return
            job.state = "queued"  # shutting down: resumes on the next start
            job.version += 1
            self._save(job)
            return
        except Exception as exc:  # the store, the model...: never the files' fault
            if not isinstance(exc, QuarryError):
                log.exception("ingestion job %s hit an unexpected error", job.id)
            if isinstance(exc, QuarryError):
                code, message = exc.code, exc.message
            else:
                code, message = "internal_error", f"{type(exc).__name__}: {exc}"
            for entry in todo:
                if not entry.finished:
                    entry.status = "retrying"
                    entry.error = {"code": code, "message": message}
            self._retry_later(job, {"code": code, "message": message})
            return
        waiting = [f for f in job.files if f.status == "retrying"]
        if waiting:
            assert waiting[0].error is not None
            self._retry_later(job, waiting[0].error)
            return
        job.retries = 0
        self._finish(job)

    def _finish(self, job: Job) -> None:
        """Save the final state, then keep originals and clean the staging folder."""
        for entry in job.files:
            if not entry.finished:
                entry.status = "cancelled" if job.cancel_requested else "failed"
        job.settle()
        job.version += 1
        self._save(job)
        self._clean_up(job)
        self.finished[job.state] += 1
        if self._on_finish is not None:
            self._on_finish(job)

    def _clean_up(self, job: Job) -> None:
        folder = self.root / job.id / "files"
        failed_dir = self.root / job.id / "failed"
        for entry in job.files:
            staged = folder / entry.staged if entry.staged else None
            if staged is None or not staged.exists():
                continue
            if entry.status in ("ingested", "unchanged") and self.originals is not None:
                self.originals.keep(staged, document_id(entry.name, staged.read_bytes()))
            elif entry.status == "failed":
                failed_dir.mkdir(parents=True, exist_ok=True)
                shutil.move(staged, failed_dir / entry.staged)
        shutil.rmtree(folder, ignore_errors=True)
