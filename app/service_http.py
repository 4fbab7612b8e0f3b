"""Quarry through a running server's HTTP API (`HttpQuarry`), with the shared client.

When a server owns the data dir (or `--api` / QUARRY_API_URL names one), the CLI's verbs go
there: the same upload, job, identity rules and search as the API's own clients, with the
CLI's progress bars fed from the job's progress.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from app.backup import MANIFEST, verify
from app.migration_state import ACTIVE
from app.service import tally
from client import ApiClient, ApiError, ClientSettings
from embedding.errors import InvalidInputError, QuarryError
from ingest.models import FileError, IngestReport
from ingest.pipeline import IngestObserver

_FILES_PER_UPLOAD = 64
_BYTES_PER_UPLOAD = 200_000_000
_TERMINAL = {"done", "partial", "failed", "cancelled"}


class RemoteError(QuarryError):
    """What the server said, passed on with its own code."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message, detail=error.detail)
        self.code = error.code
        self.status = error.status or 503


def connect(url: str, api_key: str | None) -> HttpQuarry:
    return HttpQuarry(ApiClient(ClientSettings(api_url=url, api_key=api_key, api_timeout_s=600)))


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        raise RemoteError(exc) from exc


def _groups(files: Sequence[tuple[Path, str]]) -> Iterator[list[tuple[Path, str]]]:
    group: list[tuple[Path, str]] = []
    size = 0
    for path, key in files:
        length = path.stat().st_size if path.exists() else 0
        if group and (len(group) >= _FILES_PER_UPLOAD or size + length > _BYTES_PER_UPLOAD):
            yield group
            group, size = [], 0
        group.append((path, key))
        size += length
    if group:
        yield group


def ingest(
    client: ApiClient,
    files: Sequence[tuple[Path, str]],
    *,
    collection: str,
    metadata: dict[str, Any],
    force: bool,
    observer: IngestObserver,
) -> IngestReport:
    """Upload `files` (path, source key) as jobs and follow them to their end."""
    report = IngestReport(files=len(files))
    jobs: list[str] = []
    started = time.perf_counter()
    for group in _groups(files):
        with ExitStack() as stack:
            handles = [(key, stack.enter_context(path.open("rb"))) for path, key in group]
            try:
                accepted = client.upload(handles, metadata, collection=collection, force=force)
            except ApiError as exc:
                rejected = (exc.detail or {}).get("rejected") if exc.status < 500 else None
                if not rejected:
                    raise RemoteError(exc) from exc
                for item in rejected:
                    error = FileError(item["file"], item["code"], item["message"])
                    report.errors.append(error)
                    observer.file_done(error.file, "failed", 0, error)
                continue
        jobs.append(accepted["job_id"])
    for job_id in jobs:
        follow(client, job_id, observer, report)
    report.seconds = time.perf_counter() - started
    return report


def follow(
    client: ApiClient, job_id: str, observer: IngestObserver, report: IngestReport
) -> dict[str, Any]:
    """Poll a job until it ends, turning its progress into observer calls and the report."""
    done: set[str] = set()
    queued = stored = 0
    while True:
        job = call(client.job, job_id)
        progress = job["progress"]
        if progress["chunked"] > queued:
            observer.chunks_queued(progress["chunked"] - queued)
            queued = progress["chunked"]
        if progress["stored"] > stored:
            observer.chunks_stored(progress["stored"] - stored)
            stored = progress["stored"]
        for entry in job["files"]:
            if entry["name"] in done or not entry["finished"]:
                continue
            done.add(entry["name"])
            _tally(entry, observer, report)
        if job["state"] in _TERMINAL:
            return dict(job)
        time.sleep(0.3)


def _tally(entry: dict[str, Any], observer: IngestObserver, report: IngestReport) -> None:
    name, status = entry["name"], entry["status"]
    error = None
    if entry.get("error"):
        error = FileError(name, entry["error"]["code"], entry["error"]["message"])
    warnings = list(entry.get("warnings") or ())
    tally(report, status, entry["stored"], error, warnings)
    for warning in warnings:
        observer.file_warning(name, warning)
    observer.file_done(name, status, entry["stored"], error)


def documents(client: ApiClient, collection: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        page = call(client.documents, limit=1000, offset=len(found), collection=collection)
        found.extend(page["documents"])
        if len(found) >= page["total"] or not page["documents"]:
            return found


class HttpQuarry:
    """`Quarry` over a running server: every verb is one of its API calls."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    @property
    def where(self) -> str:
        return f"through the server at {self.client.base_url}"

    def ingest(
        self,
        files: Sequence[tuple[Path, str]],
        *,
        collection: str,
        metadata: dict[str, Any],
        force: bool,
        observer: IngestObserver,
    ) -> IngestReport:
        return ingest(
            self.client,
            files,
            collection=collection,
            metadata=metadata,
            force=force,
            observer=observer,
        )

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
        return dict(
            call(
                self.client.search,
                query,
                top_k,
                filters,
                instruction,
                collection=collection,
                score_threshold=threshold,
                mode=mode,
                rerank=rerank,
            )
        )

    def documents(self, collection: str) -> list[dict[str, Any]]:
        return documents(self.client, collection)

    def delete_document(self, collection: str, doc_id: str) -> int:
        return int(call(self.client.delete, doc_id, collection)["deleted_chunks"])

    def collections(self) -> list[dict[str, Any]]:
        return list(call(self.client.collections)["collections"])

    def model(self) -> dict[str, Any]:
        checks = call(self.client.readiness).get("checks", {})
        wanted = ("model", "chosen", "warning", "reason")
        return {k: v for k, v in checks.get("model", {}).items() if k in wanted}

    def backfill_sparse(self, collection: str) -> int:
        return int(call(self.client.backfill_sparse, collection)["chunks_updated"])

    def migrate(
        self,
        collection: str,
        spec: dict[str, Any],
        wait: bool = True,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """The server runs it (and carries on if we stop waiting); polled to its end."""
        now = dict(call(self.client.migrate, collection, spec))
        while wait and now["stage"] in ACTIVE and not now["error"]:  # (failed: said, not waited)
            if progress is not None:
                progress(now)
            time.sleep(0.5)
            now = dict(call(self.client.migration, collection))
        return now

    def migration(self, collection: str) -> dict[str, Any]:
        return dict(call(self.client.migration, collection))

    def cancel_migration(self, collection: str) -> dict[str, Any]:
        return dict(call(self.client.cancel_migration, collection))

    def backup(self, dest: Path) -> dict[str, Any]:
        """The server takes it; its tar stream is unpacked into `dest` and verified."""
        if dest.exists() and any(dest.iterdir()):
            raise InvalidInputError(
                f"dest: {dest} is not empty (a backup goes into a new folder)",
                detail={"field": "dest"},
            )
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as spool:
            call(self.client.backup, spool)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r|gz") as archive:
                archive.extractall(dest, filter="data")
        problems = verify(dest)
        if problems:
            raise InvalidInputError(
                f"{dest}: the backup received does not verify: {'; '.join(problems[:5])}",
                detail={"problems": problems},
            )
        manifest: dict[str, Any] = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
        return manifest

    def sources(self) -> list[dict[str, Any]]:
        return list(call(self.client.sources)["sources"])

    def add_source(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(call(self.client.add_source, spec))

    def remove_source(self, name: str) -> dict[str, Any]:
        return dict(call(self.client.remove_source, name))

    def sync_named(self, name: str) -> dict[str, Any]:
        """Ask the server for a run and wait for one that started after the asking."""
        run = int(call(self.client.sync_source, name)["run"])
        while True:
            time.sleep(0.5)
            now = call(self.client.source, name)
            if now["runs"] >= run and not now["running"]:
                return dict(now)

    def create_key(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(call(self.client.create_key, spec))

    def keys(self) -> list[dict[str, Any]]:
        return list(call(self.client.keys)["keys"])

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return dict(call(self.client.revoke_key, key_id))

    def audit(self, limit: int, key_id: str | None = None) -> list[dict[str, Any]]:
        return list(call(self.client.audit, limit, key_id)["entries"])

    def close(self) -> None:
        self.client.close()
