"""Remembers documents that failed for reasons inside the file itself, so a re-run skips re-parsing.

Only failures that depend on the bytes alone are kept (empty, encrypted, no text,
unreadable); a missing system tool is checked afresh every time.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from filelock import FileLock

from ingest.models import FileError

CONTENT_FAILURES = frozenset({"empty_file", "encrypted", "no_text", "unreadable"})
_VERSION = 1


class FailureLedger:
    """A small JSON file of `doc_id -> (code, message)`; written once per run.

    Many processes write it (every file a worker ends): a save takes the file's lock,
    re-reads it, adds this run's new entries and replaces it through a temporary file of its
    own, so no writer drops another's entries or half-writes the file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, str]] = self._load()
        self._new: dict[str, dict[str, str]] = {}

    def _load(self) -> dict[str, dict[str, str]]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            return {}
        return dict(data.get("entries", {}))

    def get(self, doc_id: str, name: str) -> FileError | None:
        with self._lock:
            entry = self._entries.get(doc_id)
        if entry is None:
            return None
        return FileError(name, entry["code"], f"{name}: {entry['reason']}")

    def record(self, doc_id: str, error: FileError) -> None:
        if error.code not in CONTENT_FAILURES or not doc_id:
            return
        reason = error.message.split(": ", 1)[1] if ": " in error.message else error.message
        with self._lock:
            self._entries[doc_id] = self._new[doc_id] = {"code": error.code, "reason": reason}

    def save(self) -> None:
        with self._lock:
            if not self._new or self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path) + ".lock", timeout=60):
                merged = self._load() | self._new
                tmp = self.path.with_name(
                    f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
                )
                with tmp.open("w", encoding="utf-8") as handle:
                    handle.write(json.dumps({"version": _VERSION, "entries": merged}))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            self._entries = merged
            self._new = {}
