"""Ingestion jobs: what they hold, how far they got, and where their state is kept."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"done", "failed", "partial", "cancelled"})
TERMINAL_FILE_STATES = frozenset({"ingested", "unchanged", "failed", "cancelled"})
STAGES = ("parsed", "chunked", "embedded", "stored")


@dataclass
class FileProgress:
    """One uploaded file: where it is staged, how far it got, and why it failed if it did."""

    name: str
    size_bytes: int = 0
    staged: str = ""  # file name under the job's files/ folder; "" when it was rejected
    # queued, parsing, embedding, retrying, ingested, unchanged, failed, cancelled
    status: str = "queued"
    parsed: int = 0  # elements
    chunked: int = 0  # chunks
    embedded: int = 0
    stored: int = 0
    error: dict[str, str] | None = None
    attempts: int = 0

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_FILE_STATES

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
            {k: v for k, v in asdict(f).items() if k != "staged"}
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
    """Where job state survives a restart of the API."""

    def save(self, job: Job) -> None: ...

    def get(self, job_id: str) -> Job | None: ...

    def recent(self, limit: int) -> list[Job]: ...


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class FileJobStore:
    """`<root>/<job id>/state.json`, replaced atomically and fsync'd: the job's truth lives
    beside its staged files, so no cache outage can lose or stale a job's final state."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, job: Job) -> None:
        folder = self.root / job.id
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / "state.json", json.dumps(job.to_dict()))

    def get(self, job_id: str) -> Job | None:
        path = self.root / job_id / "state.json"
        try:
            return Job.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

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
        jobs = [self.get(name) for _, name in newest]
        found = [job for job in jobs if job is not None]
        return sorted(found, key=lambda job: job.created_at, reverse=True)[:limit]
