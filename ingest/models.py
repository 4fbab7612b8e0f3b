"""What the ingestion stages hand each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from embedding.errors import QuarryError


@dataclass(frozen=True)
class Element:
    """One parsed piece of a document, with its provenance."""

    text: str
    type: str
    page: int | None = None
    languages: tuple[str, ...] = ()
    ocr: bool = False  # read from an image of the page, not from a text layer
    ocr_confidence: float | None = None  # OCR: its page's mean word confidence, 0-100


@dataclass(frozen=True)
class Chunk:
    """A token-bounded run of elements, ready to embed."""

    index: int
    text: str
    tokens: int
    page: int | None
    element_types: tuple[str, ...]
    languages: tuple[str, ...] = ()
    ocr: bool = False
    ocr_confidence: float | None = None  # the lowest of its OCR'd pages' confidences


class ParseError(QuarryError):
    """A file that yields no usable text; the code says why (stable, machine-readable)."""

    status = 422

    def __init__(
        self, code: str, message: str, *, status: int = 422, suspect: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        # True when the parser failed in a way that does not prove the bytes are bad (a
        # generic exception, a crashed worker): tried again a bounded number of times.
        self.suspect = suspect

    def __reduce__(self) -> tuple[Any, ...]:  # crosses the parse worker's process boundary
        return (_rebuild_parse_error, (self.code, self.message, self.status, self.suspect))


def _rebuild_parse_error(code: str, message: str, status: int, suspect: bool) -> ParseError:
    return ParseError(code, message, status=status, suspect=suspect)


class Stopped(Exception):
    """The job is stopping (shutdown or cancel): the current file is left unfinished."""


class TransientError(QuarryError):
    """A dependency failed while a file was processed (store, model, cache, a worker):
    nothing is wrong with the file, so it is tried again later, never recorded as its fault."""

    code = "retrying"
    status = 503


@dataclass(frozen=True)
class FileError:
    """Why a file did not go in. `kind`: `final` (the file's own fault) or `transient` (a
    dependency failed: the file is retried until it is back)."""

    file: str
    code: str
    message: str
    kind: str = "final"

    @property
    def final(self) -> bool:
        return self.kind == "final"

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "code": self.code, "message": self.message}


@dataclass
class IngestReport:
    files: int = 0
    ingested: int = 0
    unchanged: int = 0
    superseded: int = 0  # a newer acknowledged version of the source was stored first
    chunks: int = 0
    errors: list[FileError] = field(default_factory=list)
    retrying: list[FileError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # files that went in with a caveat
    seconds: float = 0.0
    model_loaded: bool = False

    def add(self, other: IngestReport) -> None:
        """Count `other`'s files into this report (two runs reported as one)."""
        self.files += other.files
        self.ingested += other.ingested
        self.unchanged += other.unchanged
        self.superseded += other.superseded
        self.chunks += other.chunks
        self.errors += other.errors
        self.retrying += other.retrying
        self.warnings += other.warnings

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "ingested": self.ingested,
            "unchanged": self.unchanged,
            "superseded": self.superseded,
            "chunks": self.chunks,
            "errors": [error.to_dict() for error in self.errors + self.retrying],
            "warnings": list(self.warnings),
        }
