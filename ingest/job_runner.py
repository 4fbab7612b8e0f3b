"""Runs ingestion jobs one at a time on a worker thread, and resumes unfinished ones.

A job's staged `files/` folder exists until the job has ended, so on start every job
folder that still has one is queued again. The pipeline is idempotent (deterministic chunk
ids, complete documents skipped, half-written ones redone), so a resumed job ends with
exactly the chunks a clean run would have stored.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path

from embedding.errors import QuarryError
from ingest.jobs import Job, JobStore
from ingest.models import FileError
from ingest.originals import Originals
from ingest.pipeline import IngestObserver, IngestPipeline
from ingest.sources import FileSource
from ingest.uploads import load_manifest

log = logging.getLogger(__name__)

PipelineFactory = Callable[[str, IngestObserver], IngestPipeline]


class JobInterrupted(Exception):
    """The server is stopping; the job is left queued and resumes on the next start."""


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
                entry.status = "parsing" if stage == "parsed" else "embedding"
                self._changed()

    def file_done(self, name: str, status: str, chunks: int, error: FileError | None) -> None:
        with self._lock:
            entry = self._by_name.get(name)
            if entry is not None:
                entry.status = status
                entry.error = {"code": error.code, "message": error.message} if error else None
                self._changed(force=True)

    def chunks_queued(self, count: int) -> None:
        if self._stopping.is_set():
            raise JobInterrupted

    def chunks_embedded(self, count: int) -> None:
        if self._stopping.is_set():
            raise JobInterrupted

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
        self.max_attempts = 5
        self.retry_delay = 10.0

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
            if job.finished:
                shutil.rmtree(folder / "files", ignore_errors=True)
                continue
            job.state = "queued"
            self._save(job)
            self._enqueue(job)
            resumed += 1
        if resumed:
            log.info("resuming %d unfinished ingestion job(s)", resumed)
        return resumed

    # -- queries -----------------------------------------------------------------------
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

    @property
    def depth(self) -> int:
        """Jobs waiting or running."""
        with self._lock:
            return sum(1 for job in self._live.values() if not job.finished)

    # -- internals ---------------------------------------------------------------------
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
            if job is not None and not job.finished:
                self._run(job)

    def _retry_later(self, job: Job, exc: QuarryError) -> None:
        """A service was unavailable (store, model): keep the upload and try again."""
        delay = self.retry_delay * job.attempts
        log.warning("job %s: %s; retrying in %.0f s", job.id, exc.message, delay)
        job.state = "queued"
        job.error = {"code": exc.code, "message": f"{exc.message} (retrying in {delay:.0f} s)"}
        job.version += 1
        self._save(job)
        timer = threading.Timer(delay, self._queue.put, args=(job.id,))
        timer.daemon = True
        timer.start()

    def _run(self, job: Job) -> None:
        folder = self.root / job.id / "files"
        job.state, job.started_at, job.finished_at = "running", time.time(), None
        job.attempts += 1
        job.error = None
        job.version += 1
        self._save(job)
        todo = [f for f in job.files if not f.finished]
        sources = [
            FileSource(folder / f.staged, display=f.name, metadata=job.metadata) for f in todo
        ]
        tracker = JobTracker(job, self._save, self._stopping)
        try:
            self._pipelines(job.collection, tracker).run(sources)
        except JobInterrupted:
            job.state = "queued"
            job.version += 1
            self._save(job)
            return
        except QuarryError as exc:
            if exc.status == 503 and job.attempts < self.max_attempts:
                self._retry_later(job, exc)
                return
            job.error = {"code": exc.code, "message": exc.message}
        except Exception as exc:
            log.exception("ingestion job %s failed", job.id)
            job.error = {"code": "internal_error", "message": f"ingestion failed: {exc}"}
        if job.error is not None:
            for entry in todo:
                if not entry.finished:
                    entry.status, entry.error = "failed", dict(job.error)
        job.settle()
        job.version += 1
        self._save(job)
        if self.originals is not None:
            for entry in job.files:
                if entry.status in ("ingested", "unchanged") and entry.staged:
                    self.originals.keep(folder / entry.staged)
        shutil.rmtree(folder, ignore_errors=True)
        self.finished[job.state] += 1
        if self._on_finish is not None:
            self._on_finish(job)
