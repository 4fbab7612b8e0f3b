"""What the ingestion stages hand each other."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from embedding.errors import QuarryError


@dataclass(frozen=True)
class Element:
    """One parsed piece of a document, with its provenance."""

    text: str
    type: str
    page: int | None = None
    languages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A token-bounded run of elements, ready to embed."""

    index: int
    text: str
    tokens: int
    page: int | None
    element_types: tuple[str, ...]
    languages: tuple[str, ...] = ()


class ParseError(QuarryError):
    """A file that yields no usable text; the code says why (stable, machine-readable)."""

    status = 422

    def __init__(self, code: str, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class FileError:
    file: str
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class IngestReport:
    files: int = 0
    ingested: int = 0
    unchanged: int = 0
    chunks: int = 0
    errors: list[FileError] = field(default_factory=list)
    seconds: float = 0.0
    model_loaded: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "ingested": self.ingested,
            "unchanged": self.unchanged,
            "chunks": self.chunks,
            "errors": [error.to_dict() for error in self.errors],
        }
