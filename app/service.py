"""One interface to Quarry for every front door, and the rules both implementations share.

The CLI picks an implementation once (`LocalQuarry`: this process opens the data dir;
`HttpQuarry`: a running server does the work) and never asks which it got: the same verbs
give the same results, the same JSON shapes, the same error codes and the same side
effects either way (a local ingest is staged as a job and keeps originals as an upload
does; deleting a document removes its kept original either way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from app.schemas import Hit, SearchResponse
from ingest.models import FileError, IngestReport
from ingest.originals import Originals
from ingest.pipeline import IngestObserver
from ingest.uploads import UploadRejected
from retrieval.errors import NotFoundError
from retrieval.protocol import VectorStore
from retrieval.search import SearchResult


class Quarry(Protocol):
    """What a front door can ask of Quarry."""

    @property
    def where(self) -> str:
        """Where the work happens, for people: the store here, or the server's URL."""
        ...

    def ingest(
        self,
        files: Sequence[tuple[Path, str]],
        *,
        collection: str,
        metadata: dict[str, Any],
        force: bool,
        observer: IngestObserver,
    ) -> IngestReport: ...

    def search(
        self,
        query: str,
        *,
        collection: str,
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        instruction: str | None = None,
        threshold: float | None = None,
        mode: str | None = None,
        rerank: bool = False,
    ) -> dict[str, Any]:
        """The answer in `/v1/search`'s shape (`SearchResponse`)."""
        ...

    def documents(self, collection: str) -> list[dict[str, Any]]: ...

    def delete_document(self, collection: str, doc_id: str) -> int: ...

    def collections(self) -> list[dict[str, Any]]: ...

    def model(self) -> dict[str, Any]:
        """The model in use (`model`, `chosen`, `warning`) or why there is none (`reason`)."""
        ...

    def backfill_sparse(self, collection: str) -> int: ...

    def sources(self) -> list[dict[str, Any]]:
        """Every named source, with what its last run did (`app.sources.Source`)."""
        ...

    def add_source(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Follow a source (`app.sources.SourceIn`'s fields)."""
        ...

    def remove_source(self, name: str) -> dict[str, Any]: ...

    def sync_named(self, name: str) -> dict[str, Any]:
        """Run source `name` once and return it, with its run's outcome."""
        ...

    def migrate(
        self,
        collection: str,
        spec: dict[str, Any],
        wait: bool = True,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Move a collection to another model (`spec`: `model`, `dim`, `rollback`), or back;
        returns the migration's state, at its end when `wait` (`progress` sees each step)."""
        ...

    def migration(self, collection: str) -> dict[str, Any]:
        """The collection's latest migration (`app.migration_state.MigrationState`)."""
        ...

    def cancel_migration(self, collection: str) -> dict[str, Any]: ...

    def backup(self, dest: Path) -> dict[str, Any]:
        """A backup of the data dir in the new folder `dest` (`app.backup`); its manifest."""
        ...

    def create_key(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A new API key (`app.key_spec.KeyIn`'s fields); `key` is shown this once."""
        ...

    def keys(self) -> list[dict[str, Any]]:
        """Every stored key, never the key itself."""
        ...

    def revoke_key(self, key_id: str) -> dict[str, Any]: ...

    def audit(self, limit: int, key_id: str | None = None) -> list[dict[str, Any]]:
        """The newest audit entries first."""
        ...

    def close(self) -> None: ...


def refused_upload(
    exc: UploadRejected, report: IngestReport, observer: IngestObserver
) -> IngestReport:
    """An upload none of whose files could be accepted: each one's reason, counted."""
    for item in (exc.detail or {}).get("rejected", []):
        error = FileError(item["file"], item["code"], item["message"])
        report.errors.append(error)
        observer.file_done(error.file, "failed", 0, error)
    return report


def tally(
    report: IngestReport,
    status: str,
    stored: int,
    error: FileError | None,
    warnings: Sequence[str] = (),
) -> None:
    """Count one ended file into `report`: the one tally of both front doors."""
    report.warnings += warnings
    if status == "ingested":
        report.ingested += 1
        report.chunks += stored
    elif status == "unchanged":
        report.unchanged += 1
    elif status == "superseded":
        report.superseded += 1
    elif status == "retrying" and error is not None:
        report.retrying.append(error)
    elif error is not None:
        report.errors.append(error)


def require_collection(store: VectorStore, collection: str) -> None:
    """The one answer for a collection that does not exist: 404 `not_found`."""
    if store.recipe(collection) is None:
        raise NotFoundError(
            f"collection {collection!r} does not exist yet: upload documents first",
            detail={"collection": collection},
        )


def delete_document(store: VectorStore, originals: Originals, collection: str, doc_id: str) -> int:
    """Remove a document's chunks and its kept original; returns the chunks removed."""
    if store.recipe(collection) is None or store.document(collection, doc_id) is None:
        raise NotFoundError(
            f"no document {doc_id!r} in collection {collection!r}", detail={"doc_id": doc_id}
        )
    removed = store.delete_document(collection, doc_id)
    originals.remove(doc_id)
    return removed


def search_answer(
    result: SearchResult,
    query: str,
    collection: str,
    max_chars: int,
    timings_ms: dict[str, float] | None = None,
) -> SearchResponse:
    """A search result in the API's one shape, hits bounded to `max_chars`."""
    return SearchResponse(
        query=query,
        collection=collection,
        instruction=result.instruction,
        mode=result.mode,
        language=result.language,
        weights=result.weights,
        note=result.note,
        hits=[Hit.bounded(hit, max_chars) for hit in result.hits],
        timings_ms={k: round(v, 3) for k, v in (timings_ms or result.timings_ms).items()},
    )
