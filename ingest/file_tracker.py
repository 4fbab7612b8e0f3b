"""A held file's progress as it moves, its lease kept alive, and its fence.

The tracker writes a file's progress to the job store, renews the holder's lease while it
works, and stops the work (`LeaseLost`) as soon as the job state says another process took
the file over: a holder presumed dead that was only slow never writes over its successor.
"""

from __future__ import annotations

import threading
import time

from ingest.job_store import FileJobStore
from ingest.jobs import FileProgress
from ingest.models import FileError, Stopped
from ingest.pipeline import SilentObserver


class LeaseLost(Stopped):
    """Another process took this file over (this one was presumed dead): stop, write
    nothing more."""


class FileTracker(SilentObserver):
    """An `IngestObserver` for one held file: its progress goes to the job store as it
    moves, its lease is renewed while it works, and it stops if another process took the
    file over (its claim is no longer the one on disk)."""

    def __init__(
        self,
        store: FileJobStore,
        job_id: str,
        index: int,
        entry: FileProgress,
        stopping: threading.Event,
        lease_s: float = 45.0,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.index = index
        self.entry = entry
        self._claim = entry.claim  # this hold's mark (the entry's is cleared as it ends)
        self.lease_s = lease_s
        self._stopping = stopping
        self._lock = threading.Lock()
        self._saved_at = time.monotonic()  # the claim was just written
        self._cancel_checked_at = 0.0
        self._lease_lost = False

    def _still_mine(self) -> bool:
        on_disk = self.store.read_file(self.job_id, self.index)
        if on_disk is not None and on_disk.claim != self._claim and not on_disk.finished:
            self._lease_lost = True
        elif on_disk is not None and on_disk.finished and not self.entry.finished:
            self._lease_lost = True  # another holder finished it meanwhile
        return not self._lease_lost

    def save(self, force: bool = False) -> None:
        with self._lock:
            if self._lease_lost:
                raise LeaseLost
            self.entry.version += 1
            now = time.monotonic()
            if force or now - self._saved_at > 0.5:
                self._saved_at = now
                self.store.save_file(self.job_id, self.index, self.entry)

    def renew(self) -> None:
        """Push the lease forward (the holder's heartbeat, durable in the job state)."""
        with self._lock:
            if self._lease_lost or not self.entry.held or not self._still_mine():
                return
            self.entry.lease_until = time.time() + self.lease_s
            self.entry.version += 1
            self._saved_at = time.monotonic()
            self.store.save_file(self.job_id, self.index, self.entry)

    def file_stage(self, name: str, stage: str, count: int) -> None:
        setattr(self.entry, stage, count)
        self.entry.status = "parsing" if stage in ("parsed", "chunked") else "embedding"
        self.save()

    def file_warning(self, name: str, message: str) -> None:
        if message not in self.entry.warnings:  # a file parsed again says it once
            self.entry.warnings = [*self.entry.warnings, message]  # not the stored copy's
        self.save(force=True)

    def file_done(self, name: str, status: str, chunks: int, error: FileError | None) -> None:
        """The file's outcome, and the end of its hold, in one durable write (changed
        under the lock, so a heartbeat sees the file held or ended, never half of each)."""
        with self._lock:
            if self._lease_lost:
                raise LeaseLost
            failures = self.entry.failures
            self.entry.status = status
            self.entry.error = {"code": error.code, "message": error.message} if error else None
            self.entry.failures = 0
            self.entry.release()
        try:
            self.save(force=True)
        except Exception:
            self.entry.failures = failures  # not recorded: unexpected failures still count
            raise

    def file_retry(self, name: str, error: FileError) -> None:
        self.entry.status = "retrying"
        self.entry.error = {"code": error.code, "message": error.message}
        self.save(force=True)

    def check(self) -> None:
        if self._lease_lost:
            raise LeaseLost
        if self._stopping.is_set():
            raise Stopped
        now = time.monotonic()
        if now - self._cancel_checked_at > 1.0:  # a cancel is read from the shared state
            self._cancel_checked_at = now
            job = self.store.record(self.job_id)
            if job is None or job.cancel_requested:
                raise Stopped
