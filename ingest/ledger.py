"""Remembers documents that failed for reasons inside the file itself, so a re-run skips re-parsing.

Only failures that depend on the bytes alone are kept (empty, encrypted, no text,
unreadable); a missing system tool is checked afresh every time.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ingest.models import FileError

CONTENT_FAILURES = frozenset({"empty_file", "encrypted", "no_text", "unreadable"})
_VERSION = 1


class FailureLedger:
    """A small JSON file of `doc_id -> (code, message)`; written once per run."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, str]] = {}
        self._dirty = False
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("version") == _VERSION:
                    self._entries = dict(data.get("entries", {}))
            except (OSError, ValueError):
                self._entries = {}

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
            self._entries[doc_id] = {"code": error.code, "reason": reason}
            self._dirty = True

    def save(self) -> None:
        with self._lock:
            if not self._dirty or self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"version": _VERSION, "entries": self._entries}), encoding="utf-8"
            )
            tmp.replace(self.path)
            self._dirty = False
