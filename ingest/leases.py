"""Who holds a file in flight, until when, and whether that holder is gone.

A file being worked on has one holder and a lease in its durable progress record: the
holder's host and pid, a claim token and a deadline the holder pushes forward while it
works. Whoever finds the holder gone takes the file over in one compare-and-set under the
job's lock (`take_over`): the file goes back to `queued`, its `lost` count grows by one,
and after `MAX_LOST` real deaths it is failed as a dead letter. A holder that is alive but
late (a loaded machine) keeps its file: lateness delays a hand-over, it never fails work.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass

import psutil

from ingest.job_store import FileJobStore
from ingest.jobs import FileProgress

MAX_LOST = 3  # real deaths of a file's holder before the file is given up (it kills them)
STALLED_LEASES = 10  # a live holder this many leases late is taken over (without a loss)


@dataclass(frozen=True)
class Holder:
    """A process that takes files: this host and pid, and a name for the UI."""

    host: str
    pid: int
    name: str

    @classmethod
    def me(cls, name: str | None = None) -> Holder:
        host = socket.gethostname()
        return cls(host, os.getpid(), name or f"{host}-{os.getpid()}")

    def claim(self, entry: FileProgress, lease_s: float) -> None:
        """Make `entry` held by this process (a fresh claim token), its lease from now."""
        entry.host, entry.pid, entry.worker = self.host, self.pid, self.name
        entry.claim = uuid.uuid4().hex
        entry.lease_until = time.time() + lease_s


def holder_alive(entry: FileProgress) -> bool | None:
    """True or False when the holder runs on this host (its pid says); None elsewhere."""
    if not entry.host or entry.host != socket.gethostname():
        return None
    if entry.pid == os.getpid():
        return True
    try:
        process = psutil.Process(entry.pid)
        return process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def verdict(entry: FileProgress, lease_s: float, now: float | None = None) -> str:
    """`held` (leave it), `dead` (its holder died: take it over, counting a loss) or
    `stalled` (alive but far past its lease: take it over without counting one)."""
    if not entry.held:
        return "free"
    now = time.time() if now is None else now
    alive = holder_alive(entry)
    if alive is False:
        return "dead"
    if now <= entry.lease_until:
        return "held"
    if alive is None:  # another machine's holder, its lease run out: presumed dead
        return "dead"
    return "stalled" if now > entry.lease_until + STALLED_LEASES * lease_s else "held"


def take_over(store: FileJobStore, job_id: str, index: int, lease_s: float) -> str | None:
    """Hand file `index` on if its holder is gone: one compare-and-set under the job's
    lock. Returns `queued` (handed on), `dead_letter` (failed: its holders keep dying), or
    None (nothing to do: it is held by a live holder, finished, or free)."""
    with store.locked(job_id):
        job = store.record(job_id)
        if job is None or job.finished or index >= len(job.files):
            return None
        entry = store.file(job, index)
        seen = verdict(entry, lease_s)
        if seen not in ("dead", "stalled"):
            return None
        if seen == "dead":
            entry.lost += 1
        holder = entry.worker or "a worker"
        entry.release()
        entry.version += 1
        if entry.lost >= MAX_LOST:
            entry.status = "failed"
            entry.error = {
                "code": "worker_lost",
                "message": f"{entry.name}: the process working on it died {entry.lost} times "
                "(killed, or out of memory); it is not tried again",
            }
            store.save_file(job_id, index, entry)
            return "dead_letter"
        entry.status = "queued"
        entry.error = {"code": "handed_on", "message": f"{holder} stopped; handed on"}
        store.save_file(job_id, index, entry)
        return "queued"
