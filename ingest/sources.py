"""What can be ingested: files on disk (expanded from paths, folders and globs) or raw texts."""

from __future__ import annotations

import glob
import hashlib
import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ingest.models import Element, ParseError
from ingest.parsing import parse_file


class Source(Protocol):
    """One document to ingest."""

    @property
    def name(self) -> str: ...

    def content(self) -> bytes: ...

    def parse(self) -> list[Element]: ...

    def describe(self) -> dict[str, Any]:
        """Document-level payload fields (file type, size, user metadata)."""
        ...


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def document_id(source_key: str, data: bytes) -> str:
    """A document is one version of one source: its source key plus the hash of its bytes.

    The same bytes under two source keys are two documents (deleting one leaves the other);
    the same source with new bytes is a new version that replaces the old one.
    """
    blob = f"{source_key}\0{content_hash(data)}".encode()
    return hashlib.sha256(blob).hexdigest()[:32]


@dataclass(frozen=True)
class FileSource:
    path: Path
    display: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    seq: int = 0  # the version acknowledged for this source (0: unversioned)

    @property
    def name(self) -> str:
        return self.display or str(self.path)

    def content(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise ParseError(
                "unreadable", f"{self.name}: cannot read the file ({exc.strerror})"
            ) from exc

    def parse(self) -> list[Element]:
        return parse_file(self.path, self.name)

    def describe(self) -> dict[str, Any]:
        mime, _ = mimetypes.guess_type(self.path.name)
        return {
            "file_type": self.path.suffix.lower().lstrip(".") or (mime or ""),
            "size_bytes": self.path.stat().st_size,
            "meta": dict(self.metadata),
        }


@dataclass(frozen=True)
class TextSource:
    """A document already in memory (an evaluation corpus record, say)."""

    display: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.display

    def content(self) -> bytes:
        return self.text.encode("utf-8")

    def parse(self) -> list[Element]:
        if not self.text.strip():
            raise ParseError("empty_file", f"{self.name}: the text is empty")
        return [Element(text=self.text.strip(), type="NarrativeText")]

    def describe(self) -> dict[str, Any]:
        return {"file_type": "text", "size_bytes": len(self.content()), "meta": dict(self.metadata)}


def _glob_root(pattern: str) -> Path:
    """The folder a glob's matches are named relative to: its part before any wildcard."""
    parts: list[str] = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def source_key(path: Path, root: Path | None) -> str:
    """The one identity rule for files: the path relative to the root the user gave
    (a folder or a glob's fixed part), with `/` separators; a file given alone: its name."""
    if root is None:
        return path.name
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def expand_paths(patterns: Iterable[str]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Files named by paths, folders (recursively) and globs, each with its source key,
    plus the patterns matching nothing.

    Hidden files inside folders are skipped; every other file is taken, so that one Quarry
    cannot read gets a clear per-file error rather than silence.
    """
    files: list[tuple[Path, str]] = []
    missing: list[str] = []
    seen: set[Path] = set()

    def add(path: Path, root: Path | None) -> None:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            files.append((resolved, source_key(path, root)))

    for pattern in patterns:
        magic = glob.has_magic(pattern)
        matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))] or (
            [Path(pattern)] if Path(pattern).exists() else []
        )
        if not matches:
            missing.append(pattern)
        for match in matches:
            if match.is_dir():
                root = _glob_root(pattern) if magic else match
                for child in sorted(match.rglob("*")):
                    hidden = any(part.startswith(".") for part in child.relative_to(match).parts)
                    if child.is_file() and not hidden:
                        add(child, root)
            elif match.is_file():
                add(match, _glob_root(pattern) if magic else None)
    return files, missing
