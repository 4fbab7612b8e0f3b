"""Quarry in this process: the data dir opened here, the same write path as an upload.

A local ingest is staged as a job exactly as `POST /v1/documents` stages one (durable,
versioned in acknowledgement order, originals kept), then its files are worked here by the
same `FileWorker` the server's queue consumers run, a few at once, their chunks sharing
model batches. A file that must wait for a dependency is left `retrying` in the job: the
next server on this data dir finishes it.
"""

from __future__ import annotations

import contextlib
import getpass
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from app import backup
from app.audit import AuditEntry, AuditLog
from app.key_spec import create_key, key_spec
from app.keys import KeyStore, keys_marker, namespace
from app.migrations import Migrations
from app.resources import Resources
from app.schemas import CollectionOut, DocumentOut
from app.service import (
    delete_document,
    refused_upload,
    require_collection,
    search_answer,
    tally,
)
from app.sources import SourceRegistry, new_source, run_source, source_spec
from embedding.coalescing import CoalescingEmbedder
from embedding.errors import QuarryError
from ingest.file_worker import FileTracker, FileWorker, RetryLater
from ingest.job_store import FileJobStore
from ingest.jobs import Job
from ingest.models import FileError, IngestReport, Stopped
from ingest.originals import Originals
from ingest.pipeline import IngestObserver, IngestPipeline
from ingest.uploads import UploadRejected, stage_upload
from ingest.versions import VersionCounter
from retrieval.summaries import summarize_collections


class _Tee:
    """A file's tracker (the job state) and the caller's observer (a progress bar)."""

    def __init__(self, tracker: FileTracker, shown: IngestObserver) -> None:
        self.tracker, self.shown = tracker, shown

    def file_done(self, name: str, status: str, chunks: int, error: FileError | None) -> None:
        self.tracker.file_done(name, status, chunks, error)
        self.shown.file_done(name, status, chunks, error)

    def file_retry(self, name: str, error: FileError) -> None:
        self.tracker.file_retry(name, error)
        self.shown.file_retry(name, error)

    def file_stage(self, name: str, stage: str, count: int) -> None:
        self.tracker.file_stage(name, stage, count)

    def file_warning(self, name: str, message: str) -> None:
        self.tracker.file_warning(name, message)
        self.shown.file_warning(name, message)

    def chunks_queued(self, count: int) -> None:
        self.shown.chunks_queued(count)

    def chunks_embedded(self, count: int) -> None:
        self.shown.chunks_embedded(count)

    def chunks_stored(self, count: int) -> None:
        self.shown.chunks_stored(count)

    def check(self) -> None:
        self.tracker.check()


def report_of(job: Job, report: IngestReport) -> IngestReport:
    """Tally a job's ended files into `report`."""
    for entry in job.files:
        error = FileError(entry.name, **entry.error) if entry.error else None
        tally(report, entry.status, entry.stored, error, entry.warnings)
    return report


class LocalQuarry:
    """`Quarry` over this process's own `Resources`."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.originals = Originals(resources.settings.originals_dir)

    @property
    def where(self) -> str:
        s = self.resources.settings
        return s.qdrant_url or f"embedded ({s.qdrant_path})"

    # -- the write path ------------------------------------------------------------------
    def ingest(
        self,
        files: Sequence[tuple[Path, str]],
        *,
        collection: str,
        metadata: dict[str, Any],
        force: bool,
        observer: IngestObserver,
    ) -> IngestReport:
        res, s = self.resources, self.resources.settings
        res.check_recipe_early(collection)
        started = time.perf_counter()
        report = IngestReport(files=len(files))
        store = FileJobStore(s.jobs_dir)
        try:
            with ExitStack() as stack:
                handles = [(key, stack.enter_context(p.open("rb"))) for p, key in files]
                job, rejected = stage_upload(
                    s.jobs_dir,
                    collection,
                    metadata,
                    int(s.max_file_mb * 1e6),
                    list(handles),
                    force=force,
                    versions=VersionCounter(s.data_dir),
                    free_floor_bytes=s.min_free_mb * 1_000_000,
                )
        except UploadRejected as exc:
            return refused_upload(exc, report, observer)
        for item in rejected:
            error = FileError(item.file, item.code, item.message)
            observer.file_done(item.file, "failed", 0, error)
        with store.locked(job.id):
            store.save(job)
        self._work(store, job, force, observer)
        ended = store.get(job.id) or job
        report_of(ended, report)
        report.seconds = time.perf_counter() - started
        return report

    def _work(self, store: FileJobStore, job: Job, force: bool, observer: IngestObserver) -> None:
        res, s = self.resources, self.resources.settings
        embedder = CoalescingEmbedder(lambda: res.embedder, max_items=s.batch_max_items)
        local = threading.local()

        def pipelines(collection: str, tracker: FileTracker, force_: bool) -> IngestPipeline:
            if getattr(local, "chunker", None) is None:  # one per slot, kept across files
                local.chunker = res.chunker()
            chunker = local.chunker
            return res.pipeline(
                collection,
                _Tee(tracker, observer),
                force=force_,
                optimize=False,
                chunker=lambda: chunker,
                embedder=embedder,
            )

        worker = FileWorker(
            store, pipelines, self.originals, on_settled=self._optimize, lease_s=s.lease_s
        )
        stopping = threading.Event()

        def one(index: int) -> None:
            # A file left retrying stays in the job: the next server here goes on with it.
            with contextlib.suppress(RetryLater, Stopped):
                worker.process(job.id, index, worker.holder.name, stopping)

        todo = [i for i, entry in enumerate(job.files) if entry.staged and not entry.finished]
        try:
            with ThreadPoolExecutor(max(1, min(s.ingest_slots, len(todo) or 1))) as pool:
                list(pool.map(one, todo))
        except BaseException:
            stopping.set()  # Ctrl-C: running files are handed back, untouched
            raise
        finally:
            embedder.close()

    def _optimize(self, job: Job) -> None:
        if any(f.status == "ingested" for f in job.files):
            with contextlib.suppress(QuarryError):  # stored either way; it only speeds search
                self.resources.store.optimize(job.collection)

    # -- reads ---------------------------------------------------------------------------
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
        res = self.resources
        require_collection(res.store, collection)
        service = res.search_service(collection)
        started = time.perf_counter()
        result = service.search(
            collection,
            query,
            top_k=top_k,
            filters=filters or {},
            instruction=instruction,
            score_threshold=threshold,
            plan=service.plan(mode),
            rerank=rerank,
        )
        timings = dict(result.timings_ms)
        timings["total_ms"] = (time.perf_counter() - started) * 1000
        answer = search_answer(result, query, collection, res.settings.max_hit_chars, timings)
        return answer.model_dump(mode="json")

    def documents(self, collection: str) -> list[dict[str, Any]]:
        store = self.resources.store
        found = store.documents(collection) if store.recipe(collection) else []
        return [DocumentOut(**d.to_dict()).model_dump(mode="json") for d in found]

    def delete_document(self, collection: str, doc_id: str) -> int:
        return delete_document(self.resources.store, self.originals, collection, doc_id)

    def collections(self) -> list[dict[str, Any]]:
        summaries = summarize_collections(self.resources.store)
        return [CollectionOut(**vars(s)).model_dump(mode="json") for s in summaries]

    def model(self) -> dict[str, Any]:
        try:
            return self.resources.model_choice.describe()
        except QuarryError as exc:
            return {"reason": exc.message}

    def backfill_sparse(self, collection: str) -> int:
        return self.resources.backfill_sparse(collection)

    def migrate(
        self,
        collection: str,
        spec: dict[str, Any],
        wait: bool = True,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Runs here to its end (`wait` is moot: nothing would carry on without us)."""
        migrations = self._migrations
        migrations.expire()
        state = migrations.prepare(
            collection, spec.get("model") or None, spec.get("dim"), bool(spec.get("rollback"))
        )
        tell = (lambda now: progress(now.to_dict())) if progress else None
        return migrations.run_here(state, tell).to_dict()

    def migration(self, collection: str) -> dict[str, Any]:
        return self._migrations.status(collection).to_dict()

    def cancel_migration(self, collection: str) -> dict[str, Any]:
        return self._migrations.cancel(collection).to_dict()

    @property
    def _migrations(self) -> Migrations:
        return Migrations(self.resources, self.resources.settings.migrate_keep_h * 3600)

    def backup(self, dest: Path) -> dict[str, Any]:
        return backup.take(self.resources.store, self.resources.settings, dest)

    @property
    def _registry(self) -> SourceRegistry:
        return SourceRegistry(self.resources.settings.data_dir / "sources")

    def sources(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self._registry.list()]

    def add_source(self, spec: dict[str, Any]) -> dict[str, Any]:
        source = new_source(source_spec(spec), self.resources.settings.collection, None)
        return self._registry.add(source).to_dict()

    def remove_source(self, name: str) -> dict[str, Any]:
        return {"removed": self._registry.remove(name).name}

    def sync_named(self, name: str) -> dict[str, Any]:
        stamps = self.resources.settings.data_dir / "sync"
        return run_source(self, self._registry, name, stamps).to_dict()

    def create_key(self, spec: dict[str, Any]) -> dict[str, Any]:
        made = create_key(self._keys, key_spec(spec), self.resources.settings)
        self._audited("POST", "/v1/keys", f"id={made['id']}&scope={made['scope']}")
        return made

    def keys(self) -> list[dict[str, Any]]:
        return [p.to_public() for p in self._keys.list()]

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        revoked = {"revoked": self._keys.revoke(key_id).to_public()}
        self._audited("DELETE", f"/v1/keys/{key_id}", "")
        return revoked

    def audit(self, limit: int, key_id: str | None = None) -> list[dict[str, Any]]:
        return self._audit_log.read(limit=limit, key_id=key_id)

    @property
    def _keys(self) -> KeyStore:
        s = self.resources.settings
        return KeyStore(self.resources.redis_client, namespace(s), keys_marker(s))

    @property
    def _audit_log(self) -> AuditLog:
        s = self.resources.settings
        return AuditLog(self.resources.redis_client, namespace(s), s.audit_max)

    def _audited(self, method: str, path: str, query: str) -> None:
        """Key changes made here (no server, no key) are recorded as the OS user's."""
        who = getpass.getuser()
        self._audit_log.record(
            AuditEntry(
                time.time(),
                "cli",
                f"quarry keys ({who})",
                "admin",
                method,
                path,
                query,
                200,
                "local",
            )
        )

    def close(self) -> None:
        self.resources.close()
