"""Ingestion jobs: what they hold, how far they got, and where their state is kept.

A job's files are worked on by many processes at once (`quarry worker`s, on one machine or
several sharing the data dir), so each file's progress has its own file,
`<job>/progress/<n>.json`, written only by whoever holds that file; `state.json` holds the
job-level state (written under the job's lock) and, once the job has ended, its whole final
record. A reader merges the two: that is the job's truth, the queue is only transport.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"done", "failed", "partial", "cancelled"})
TERMINAL_FILE_STATES = frozenset({"ingested", "unchanged", "superseded", "failed", "cancelled"})
IN_FLIGHT_FILE_STATES = frozenset({"parsing", "embedding"})
STAGES = ("parsed", "chunked", "embedded", "stored")
_PRIVATE = frozenset({"staged", "claim"})  # staging internals the API does not show


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
    warnings: list[str] = field(default_factory=list)  # it went in, with these caveats
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
        self.warnings = []
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
        files = [  # vars, not asdict: a poll of a job of thousands of files stays cheap
            {k: v for k, v in vars(f).items() if k not in _PRIVATE}
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
