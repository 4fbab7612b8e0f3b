"""Ingestion jobs: what they hold, how far they got, and where their state is kept.

A job's files are worked on by many processes at once (`quarry worker`s, on one machine or
several sharing the data dir), so each file's progress has its own file,
`<job>/progress/<n>.json`, written only by whoever holds that file; `state.json` holds the
job-level state (written under the job's lock) and, once the job has ended, its whole final
record. A reader merges the two: that is the job's truth, the queue is only transport.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"done", "failed", "partial", "cancelled"})
TERMINAL_FILE_STATES = frozenset({"ingested", "unchanged", "superseded", "failed", "cancelled"})
IN_FLIGHT_FILE_STATES = frozenset({"parsing", "embedding"})
STAGES = ("parsed", "chunked", "embedded", "stored")


@dataclass
class FileProgress:
    """One uploaded file: where it is staged, how far it got, and why it failed if it did."""

    name: str
    size_bytes: int = 0
    staged: str = ""  # file name under the job's files/ folder; "" when it was rejected
    # queued, parsing, embedding, retrying, ingested, unchanged, superseded, failed, cancelled
    status: str = "queued"
    parsed: int = 0  # elements
    chunked: int = 0  # chunks
    embedded: int = 0
    stored: int = 0
    error: dict[str, str] | None = None
    attempts: int = 0
    worker: str = ""  # the worker that holds it, or last held it
    started_at: float | None = None
    lost: int = 0  # attempts whose worker died before it could say how the file went
    version: int = 0  # grows with every change, whoever writes it
    seq: int = 0  # the source's version, in the order uploads were acknowledged
    failures: int = 0  # unexpected failures in a row (a bug, a 4xx): bounded, then failed
    # The lease of whoever holds it (in flight): the holder renews it; a dead holder's file
    # is taken over (`ingest.leases`). `claim` fences a holder that lost its lease.
    host: str = ""
    pid: int = 0
    claim: str = ""
    lease_until: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_FILE_STATES

    def reset(self) -> None:
        """Back to the start, for another run (`retry`); its attempts keep counting."""
        self.status, self.error, self.lost, self.worker = "queued", None, 0, ""
        self.failures = 0
        self.release()
        self.parsed = self.chunked = self.embedded = self.stored = 0
        self.started_at = None
        self.version += 1

    @property
    def held(self) -> bool:
        return self.status in IN_FLIGHT_FILE_STATES

    def release(self) -> None:
        """No longer held by anyone."""
        self.host, self.pid, self.claim, self.lease_until = "", 0, "", 0.0

    def fraction(self) -> float:
        if self.finished:
            return 1.0
        if self.chunked:
            return 0.1 + 0.9 * (self.embedded + self.stored) / (2 * self.chunked)
        return 0.0


@dataclass
class Job:
    """An upload being ingested; `version` grows with every change (for event streams)."""

    id: str
    collection: str
    files: list[FileProgress]
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    state: str = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    error: dict[str, str] | None = None
    version: int = 0
    retries: int = 0  # retries in a row after dependency failures (backoff grows with it)
    force: bool = False  # re-parse even unchanged or known-bad files (re-ingest, retry)
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    def derive_state(self) -> None:
        """An unfinished job's state, start time and version from its files' progress."""
        if self.finished:
            return
        statuses = {f.status for f in self.files}
        self.error = None
        if statuses & IN_FLIGHT_FILE_STATES:
            self.state = "running"
        elif "retrying" in statuses:
            self.state = "retrying"
            self.error = next(f.error for f in self.files if f.status == "retrying")
        elif any(f.finished for f in self.files if f.staged):
            self.state = "running"
        else:
            self.state = "queued"
        starts = [f.started_at for f in self.files if f.started_at]
        self.started_at = min(starts) if starts else None
        self.attempts = max((f.attempts for f in self.files), default=0)
        self.version += sum(f.version for f in self.files)

    def settle(self) -> None:
        """Set the final state from the files' outcomes."""
        failed = sum(1 for f in self.files if f.status == "failed")
        if self.cancel_requested:
            self.state = "cancelled"
        elif self.error is not None or failed == len(self.files):
            self.state = "failed"
        elif failed:
            self.state = "partial"
        else:
            self.state = "done"
        self.finished_at = time.time()

    def progress(self, now: float | None = None) -> dict[str, Any]:
        """Totals per stage, chunks/s and an ETA estimated from the bytes still to go."""
        now = now or time.time()
        totals = {stage: sum(getattr(f, stage) for f in self.files) for stage in STAGES}
        end = self.finished_at or now
        elapsed = max(end - self.started_at, 1e-6) if self.started_at else 0.0
        weights = [max(f.size_bytes, 1) for f in self.files]
        done = sum(w * f.fraction() for w, f in zip(weights, self.files, strict=True))
        fraction = done / max(sum(weights), 1)
        eta = None
        if self.state in ("running", "retrying") and 0 < fraction < 1:
            eta = round(elapsed * (1 - fraction) / fraction, 1)
        counts: dict[str, int] = {}
        for f in self.files:
            counts[f.status] = counts.get(f.status, 0) + 1
        return {
            **totals,
            "files": len(self.files),
            "files_by_status": counts,
            "fraction": round(fraction, 4),
            "elapsed_s": round(elapsed, 2),
            "chunks_per_s": round(totals["stored"] / elapsed, 2) if elapsed else 0.0,
            "eta_s": 0.0 if self.finished else eta,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_public(self) -> dict[str, Any]:
        """What the API shows: the job without staging internals, plus its progress."""
        files = [
            {k: v for k, v in asdict(f).items() if k not in ("staged", "claim")}
            | {"finished": f.finished, "retryable": f.status == "failed" and bool(f.staged)}
            for f in self.files
        ]
        return {
            "job_id": self.id,
            "collection": self.collection,
            "state": self.state,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "cancel_requested": self.cancel_requested,
            "metadata": self.metadata,
            "error": self.error,
            "progress": self.progress(),
            "files": files,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        files = [FileProgress(**f) for f in data.get("files", [])]
        return cls(**{**data, "files": files})


class JobStore(Protocol):
    """Where job state survives the processes that work on it."""

    def save(self, job: Job) -> None: ...

    def save_file(self, job_id: str, index: int, entry: FileProgress) -> None: ...

    def get(self, job_id: str) -> Job | None: ...

    def recent(self, limit: int) -> list[Job]: ...


def write_atomically(path: Path, text: str, durable: bool = True) -> None:
    """Replace `path` at once (readers see the old or the new text, never a mix); durable:
    on disk before this returns."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


class FileJobStore:
    """`<root>/<job id>/state.json` plus `progress/<n>.json` per file, each replaced
    atomically and fsync'd: a job's truth lives beside its staged files (on the shared
    volume), so no cache or queue outage can lose or stale it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._views: dict[str, tuple[tuple[int, int], Job]] = {}
        self._views_lock = threading.Lock()

    @contextmanager
    def locked(self, job_id: str) -> Iterator[None]:
        """The job's lock, across processes (and machines sharing the volume)."""
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock"), timeout=60):
            yield

    def save(self, job: Job) -> None:
        folder = self.root / job.id
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / "state.json", json.dumps(job.to_dict()))

    def save_file(self, job_id: str, index: int, entry: FileProgress) -> None:
        """A file's progress; fsync'd when it says how the file went or that it waits
        (counts in between are only shown, and a crash redoes the file anyway)."""
        folder = self.root / job_id / "progress"
        folder.mkdir(parents=True, exist_ok=True)
        durable = entry.status not in IN_FLIGHT_FILE_STATES
        write_atomically(folder / f"{index:05d}.json", json.dumps(asdict(entry)), durable)

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def record(self, job_id: str) -> Job | None:
        """The job's own record (`state.json`), its files as the API last wrote them: what
        a worker needs of the job (collection, metadata, cancel) without its files' reads."""
        data = self._read(self.root / job_id / "state.json")
        if data is None:
            return None
        try:
            return Job.from_dict(data)
        except TypeError:
            return None

    def read_file(self, job_id: str, index: int) -> FileProgress | None:
        """File `index`'s progress file alone (None: not written yet)."""
        found = self._read(self.root / job_id / "progress" / f"{index:05d}.json")
        try:
            return None if found is None else FileProgress(**found)
        except TypeError:
            return None

    def file(self, job: Job, index: int) -> FileProgress:
        """File `index` of an unfinished job as it stands: its progress file when that is
        newer than the job's record of it."""
        entry = job.files[index]
        newer = self.read_file(job.id, index)
        if newer is None:
            return entry
        return newer if newer.version >= entry.version else entry

    def get(self, job_id: str) -> Job | None:
        """The job as it stands: its final record, or its record merged with its files'."""
        job = self.record(job_id)
        if job is None or job.finished:
            return job
        job.files = [self.file(job, index) for index in range(len(job.files))]
        job.derive_state()
        return job

    def view(self, job_id: str) -> Job | None:
        """`get`, for readers that do not change the job (polls, event streams): reread
        only when its record or one of its files' progress was written since (two stats),
        so a tick costs nothing for a job at rest, however many files it has."""
        folder = self.root / job_id
        try:
            stamp = (
                (folder / "state.json").stat().st_mtime_ns,
                _mtime_ns(folder / "progress"),
            )
        except OSError:
            return None
        with self._views_lock:
            cached = self._views.get(job_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        job = self.get(job_id)
        # A write in the same clock tick as this read could leave the stamp unchanged.
        settled = time.time_ns() - max(stamp) > 50_000_000
        if job is not None and settled:
            with self._views_lock:
                if len(self._views) > 1000:
                    self._views.clear()
                self._views[job_id] = (stamp, job)
        return job

    def expire(self, retention_s: float) -> int:
        """Remove the records of jobs that ended more than `retention_s` ago (their
        documents, and the originals kept for them, stay); returns how many."""
        if not self.root.exists():
            return 0
        removed = 0
        cutoff = time.time() - retention_s
        for folder in self.root.iterdir():
            job = self.record(folder.name) if folder.is_dir() else None
            if job is not None and job.finished and (job.finished_at or 0) < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def all_files_ended(self, job: Job) -> bool:
        """Whether every file of `job` (a record) has ended; read from the last file back,
        as files end roughly in order, so an unfinished job usually costs one read."""
        return all(self.file(job, i).finished for i in reversed(range(len(job.files))))

    def unfinished(self) -> list[str]:
        """Ids of the jobs whose staged files are still waiting or being worked on."""
        if not self.root.exists():
            return []
        return [folder.name for folder in self.root.iterdir() if (folder / "files").is_dir()]

    def recent(self, limit: int) -> list[Job]:
        """The newest jobs; only the most recently written `2 * limit` states are read."""
        if not self.root.exists():
            return []
        states = []
        for folder in self.root.iterdir():
            try:
                states.append(((folder / "state.json").stat().st_mtime, folder.name))
            except OSError:
                continue
        newest = sorted(states, reverse=True)[: 2 * limit]
        jobs = [self.view(name) for _, name in newest]
        found = [job for job in jobs if job is not None]
        return sorted(found, key=lambda job: job.created_at, reverse=True)[:limit]
