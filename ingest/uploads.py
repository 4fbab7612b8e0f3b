"""Uploaded files: checked, then staged to disk under a job before the upload is accepted.

Uploaded names are labels, never paths: a file is written as `files/<n><ext>` inside its
job's folder, and a manifest written last (atomically) marks the upload as complete, so an
accepted upload survives the process dying before it is processed.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import sys
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from embedding.errors import QuarryError
from ingest.job_store import write_atomically
from ingest.jobs import FileProgress, Job
from ingest.models import ParseError
from ingest.parsing import check_supported
from ingest.versions import VersionCounter

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class DiskFullError(QuarryError):
    """The data dir has no room: nothing of the upload was kept (retry once there is)."""

    code = "insufficient_storage"
    status = 507


def disk_full(folder: Path, needed: int, exc: OSError | None = None) -> DiskFullError:
    free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    return DiskFullError(
        f"no room in the data dir {folder}: {free / 1e6:.0f} MB free, at least "
        f"{needed / 1e6:.0f} MB more needed; free some space (or raise the volume) and retry",
        detail={"data_dir": str(folder), "free_bytes": free, "needed_bytes": needed},
    )


def _syncfs() -> Any:
    """libc's syncfs(2) where it reports failed writeback (Linux 5.8 on), else None."""
    if sys.platform != "linux":
        return None
    release = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if release is None or (int(release[1]), int(release[2])) < (5, 8):
        return None
    return getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)


def sync_files(folder: Path) -> None:
    """Make the files just written under `folder` durable, bytes and all: one syncfs(2)
    of its filesystem (one journal commit for a thousand small files, not one each), or an
    fsync each where syncfs would not report a failure."""
    syncfs = _syncfs()
    if syncfs is None:
        for item in folder.iterdir():
            with item.open("rb") as handle:
                os.fsync(handle.fileno())
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(folder))
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make `folder`'s entries (files created, renamed) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UploadRejected(QuarryError):
    """No file of an upload could be accepted; `detail` lists each one and why."""

    code = "upload_rejected"
    status = 422


@dataclass(frozen=True)
class Rejection:
    file: str
    code: str
    message: str
    status: int

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "code": self.code, "message": self.message}


MAX_NAME_CHARS = 1024


def clean_filename(raw: str | None) -> str:
    """The uploaded name as the document's source key: kept as given (NFC-normalised).

    The name is a label, never a path: files are staged under numbered names, so slashes,
    `..`, newlines, control characters and any script are stored and returned unchanged
    (clients show them escaped). Only an empty name or one over 1,024 characters is refused.
    """
    name = unicodedata.normalize("NFC", raw or "")
    if not name.strip():
        raise ParseError("invalid_filename", "an uploaded file has no name")
    if len(name) > MAX_NAME_CHARS:
        raise ParseError(
            "invalid_filename",
            f"{name[:80]!r}...: the file name is over {MAX_NAME_CHARS} characters",
        )
    return name


def file_type(name: str) -> str:
    """The extension that decides how a file is parsed (surrounding whitespace ignored)."""
    return "".join(ch for ch in name.strip() if unicodedata.category(ch)[0] != "C")


@dataclass
class Staging:
    """Stages one upload's files under `root/<job id>/files/` and writes its manifest."""

    root: Path
    collection: str
    metadata: dict[str, Any]
    max_file_bytes: int
    force: bool = False
    versions: VersionCounter | None = None
    free_floor_bytes: int = 0
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    files: list[FileProgress] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.root / self.job_id

    def add(self, raw_name: str | None, stream: BinaryIO) -> None:
        """Check and stage one file; a bad one is recorded as rejected, never raised."""
        shown = raw_name or "(unnamed)"
        try:
            name = clean_filename(raw_name)
            shown = name
            if any(f.name == name for f in self.files):
                raise ParseError("duplicate_name", f"{name}: this upload already has that name")
            ext = check_supported(name, Path(file_type(name)).suffix)
            self._stage(name, ext, stream)
        except ParseError as exc:
            self.rejected.append(Rejection(shown, exc.code, exc.message, exc.status))

    def _stage(self, name: str, ext: str, stream: BinaryIO) -> None:
        target_dir = self.folder / "files"
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / f"{len(self.files) + len(self.rejected):05d}{ext}"
        size = 0
        head = b""
        try:
            with target.open("wb") as out:
                while block := stream.read(_CHUNK):
                    if not size:
                        head = block[:1024]
                    size += len(block)
                    if size > self.max_file_bytes:
                        out.close()
                        target.unlink()
                        limit_mb = self.max_file_bytes / 1e6
                        raise ParseError(
                            "file_too_large",
                            f"{name}: larger than the {limit_mb:g} MB limit per file",
                            status=413,
                        )
                    self._check_room(len(block))  # one statvfs a MB: never past the floor
                    out.write(block)
        except OSError as exc:
            target.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(self.root, size) from exc
            raise
        if size == 0:
            target.unlink()
            raise ParseError("empty_file", f"{name}: the file is empty")
        if ext == ".pdf" and b"%PDF-" not in head:
            target.unlink()
            raise ParseError("unreadable", f"{name}: not a PDF (no %PDF- header)")
        self.files.append(FileProgress(name=name, size_bytes=size, staged=target.name))

    def _check_room(self, more: int) -> None:
        """Refuse the upload (507) before the data dir drops below its free-space floor."""
        if not self.free_floor_bytes:
            return
        if shutil.disk_usage(self.root).free - more < self.free_floor_bytes:
            raise disk_full(self.root, self.free_floor_bytes + more)

    def commit(self) -> Job:
        """Write the manifest (the upload is accepted from here on) and return its job."""
        if not self.files:
            self.discard()
            statuses = {r.status for r in self.rejected}
            codes = {r.code for r in self.rejected}
            error = UploadRejected(
                "; ".join(r.message for r in self.rejected) or "the upload holds no files",
                detail={"rejected": [r.to_dict() for r in self.rejected]},
            )
            error.status = statuses.pop() if len(statuses) == 1 else 422
            error.code = codes.pop() if len(codes) == 1 else "upload_rejected"
            raise error
        rejected = [
            FileProgress(name=r.file, status="failed", error={"code": r.code, "message": r.message})
            for r in self.rejected
        ]
        if self.versions is not None:  # in the order uploads are acknowledged
            first = self.versions.take(len(self.files))
            for offset, entry in enumerate(self.files):
                entry.seq = first + offset
        job = Job(
            self.job_id, self.collection, self.files + rejected, self.metadata, force=self.force
        )
        try:  # the bytes and their names are on disk before the 202
            sync_files(self.folder / "files")
            fsync_dir(self.folder / "files")
            write_atomically(self.folder / MANIFEST, json.dumps(job.to_dict()))
            fsync_dir(self.folder)
            fsync_dir(self.root)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(self.root, 1 << 20) from exc
            raise
        return job

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def load_manifest(folder: Path) -> Job | None:
    try:
        return Job.from_dict(json.loads((folder / MANIFEST).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def stage_upload(
    root: Path,
    collection: str,
    metadata: dict[str, Any],
    max_file_bytes: int,
    files: list[tuple[str | None, BinaryIO]],
    *,
    force: bool = False,
    versions: VersionCounter | None = None,
    free_floor_bytes: int = 0,
) -> tuple[Job, list[Rejection]]:
    """Stage every acceptable file of an upload and commit it as a job.

    Raises:
        UploadRejected: when no file could be accepted (status and code of the failures).
    """
    staging = Staging(root, collection, metadata, max_file_bytes, force, versions, free_floor_bytes)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging._check_room(0)
        for name, stream in files:
            staging.add(name, stream)
        return staging.commit(), staging.rejected
    except BaseException:
        staging.discard()
        raise
