"""Where job state is kept: `<root>/<job id>/state.json` plus `progress/<n>.json` per file.

Every file is replaced atomically (a new inode each time), so a reader knows a file it has
already read is unchanged from its inode alone: the job's record and its files' progress
are parsed again only when rewritten. Workers read a job's record for every file they take
and every second while they work on it, and clients poll jobs of thousands of files; both
would otherwise cost a parse of the whole job each time (quadratic in its size).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock

from ingest.jobs import IN_FLIGHT_FILE_STATES, FileProgress, Job


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


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file's contents; None when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


Stamp = tuple[int, int, int]
_SETTLED_NS = 50_000_000  # a write this recent may share its stamp with the next one


def _stamp(st: os.stat_result) -> Stamp | None:
    """What tells one version of a file from the next (inode, mtime, size), or None while
    too recent to be trusted: inodes are reused and clocks are coarse, so two writes in
    one tick could look alike."""
    if time.time_ns() - st.st_mtime_ns < _SETTLED_NS:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


_VIEWS = 256


@dataclass
class _View:
    """What a job's reader last parsed: its record, and each progress file by inode."""

    record: tuple[Stamp, Job] | None = None
    files: dict[int, tuple[Stamp, FileProgress]] = field(default_factory=dict)
    job: Job | None = None  # the merged job, as `view` last built it...
    built_from: Stamp | None = None  # ...from this record
    lock: threading.Lock = field(default_factory=threading.Lock)


class FileJobStore:
    """A job's truth lives beside its staged files (on the shared volume), each piece
    replaced atomically and fsync'd, so no cache or queue outage can lose or stale it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # The jobs read lately (polled ones stay): least recently used out past _VIEWS, so
        # a server that has taken thousands of uploads holds a bounded few.
        self._views: OrderedDict[str, _View] = OrderedDict()
        self._lock = threading.Lock()

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
        # (its fields as they are: `asdict` copies them deeply, a cost in every file's step)
        write_atomically(folder / f"{index:05d}.json", json.dumps(vars(entry)), durable)

    def _cache(self, job_id: str) -> _View:
        with self._lock:
            view = self._views.get(job_id)
            if view is None:
                view = self._views[job_id] = _View()
                while len(self._views) > _VIEWS:
                    self._views.popitem(last=False)
            else:
                self._views.move_to_end(job_id)
            return view

    def _record(self, job_id: str) -> tuple[Stamp | None, Job] | None:
        """The parsed `state.json` (shared: never changed), and its stamp (None while too
        recent to be known again)."""
        path = self.root / job_id / "state.json"
        try:
            stamp = _stamp(path.stat())
        except OSError:
            return None
        view = self._cache(job_id)
        known = view.record
        if stamp is not None and known is not None and known[0] == stamp:
            return known
        data = read_json(path)
        try:
            job = Job.from_dict(data) if data is not None else None
        except TypeError:
            job = None
        if job is None:
            return None
        view.record = (stamp, job) if stamp is not None else None
        return stamp, job

    def record(self, job_id: str) -> Job | None:
        """The job's own record (`state.json`), its files as the API last wrote them: what
        a worker needs of the job (collection, metadata, cancel) without its files' reads.
        The caller may change the job it gets, not its files (`file` hands out copies)."""
        found = self._record(job_id)
        return None if found is None else replace(found[1], files=list(found[1].files))

    def read_file(self, job_id: str, index: int) -> FileProgress | None:
        """File `index`'s progress file alone (None: not written yet)."""
        found = read_json(self.root / job_id / "progress" / f"{index:05d}.json")
        try:
            return None if found is None else FileProgress(**found)
        except TypeError:
            return None

    def file(self, job: Job, index: int) -> FileProgress:
        """File `index` of an unfinished job as it stands, the caller's own copy: its
        progress file when that is newer than the job's record of it."""
        entry = job.files[index]
        newer = self.read_file(job.id, index)
        if newer is not None and newer.version >= entry.version:
            return newer
        return replace(entry)

    def get(self, job_id: str) -> Job | None:
        """The job as it stands, the caller's own: its final record, or its record merged
        with its files' progress."""
        job = self.record(job_id)
        if job is None:
            return None
        if job.finished:
            job.files = [replace(entry) for entry in job.files]
            return job
        job.files = [self.file(job, index) for index in range(len(job.files))]
        job.derive_state()
        return job

    def view(self, job_id: str) -> Job | None:
        """`get`, for readers that do not change the job (polls, event streams): only the
        pieces rewritten since the last view are parsed again (a stat each tells which),
        and a job at rest is not rebuilt at all."""
        view = self._cache(job_id)
        with view.lock:  # one reader at a time builds it: a slower one never caches older
            found = self._record(job_id)
            if found is None:
                return None
            stamp, record = found
            if record.finished:
                return replace(record, files=list(record.files))
            changed = stamp is None or view.built_from != stamp
            changed = self._read_progress(job_id, view) or changed
            if not changed and view.job is not None:
                return view.job
            job = replace(record, files=list(record.files))
            for index, entry in enumerate(job.files):
                newer = view.files.get(index)
                if newer is not None and newer[1].version >= entry.version:
                    job.files[index] = newer[1]
            job.derive_state()
            view.job, view.built_from = job, stamp
            return job

    def _read_progress(self, job_id: str, view: _View) -> bool:
        """Parse the job's progress files written since `view` last read them; whether any
        was."""
        changed = False
        try:
            with os.scandir(self.root / job_id / "progress") as listing:
                for item in listing:
                    name = item.name.removesuffix(".json")
                    if name == item.name or not name.isdigit():
                        continue
                    stamp = _stamp(item.stat())
                    known = view.files.get(int(name))
                    if stamp is not None and known is not None and known[0] == stamp:
                        continue
                    entry = self.read_file(job_id, int(name))
                    if entry is not None:
                        view.files[int(name)] = (stamp or (0, 0, 0), entry)
                        changed = True
        except OSError:
            pass  # no file has progress yet
        return changed

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
                with self._lock:
                    self._views.pop(folder.name, None)
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
