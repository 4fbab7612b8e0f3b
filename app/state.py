"""Everything the API process owns, opened by the lifespan and closed with it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from dataclasses import dataclass

import numpy as np

from app.batcher import AdmissionGate, MicroBatcher
from app.guard import access_control
from app.keys import keys_marker, namespace
from app.metrics import DataDirSpace, LiveSources, Metrics
from app.migrations import Migrations
from app.ownership import worker_credential
from app.readiness import Readiness, data_dir_space, readiness
from app.resources import Resources
from app.service import delete_document, require_collection
from app.service_served import ServedQuarry
from app.settings import Settings
from app.sources import Allowed, SourceRegistry, SourceRunner
from app.supervisor import WorkerSupervisor
from app.worker import InProcessWorker
from embedding.balancer import ServerSnapshot
from embedding.cache import CacheStats
from embedding.errors import QuarryError
from embedding.model_inputs import ModelStats
from embedding.remote import RemoteEmbedder
from ingest.job_queue import IngestQueue, connect, queue_name
from ingest.job_service import JobService
from ingest.job_store import FileJobStore
from ingest.jobs import Job
from ingest.originals import Originals
from ingest.uploads import stage_upload
from retrieval.errors import NotFoundError
from retrieval.models import CollectionRecipe, same_vectors
from retrieval.search import SearchResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchKey:
    """What queries must share to be searched in one batch."""

    collection: str
    instruction: str | None
    top_k: int
    filters_json: str
    threshold: float | None
    mode: str | None = None
    rrf_k: int | None = None
    weights: tuple[float, float] | None = None
    rerank: bool = False
    rerank_top_n: int | None = None
    vectors: str | None = None
    profile: bool = False


EmbedKey = tuple[str, str | None]  # (role, instruction)


class OriginalMissingError(QuarryError):
    code = "original_missing"
    status = 409


class QuarryState:
    """The resources, the job service, its workers and the micro-batchers of one API process."""

    def __init__(
        self,
        settings: Settings,
        resources: Resources | None = None,
        *,
        embeddings_only: bool = False,
        url: str | None = None,
    ) -> None:
        self.settings = settings
        self.resources = resources or Resources(settings, role="server")
        self.embeddings_only = embeddings_only
        self.url = url  # where worker processes reach this server (None: in-process workers)
        self.metrics = Metrics()
        self.resources.server_observer = self.metrics
        self._jobs: JobService | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._schedule: asyncio.Task[None] | None = None
        self.sources: SourceRunner | None = None  # the named sources it syncs on schedule
        self.migrations: Migrations | None = None  # collections moving to another model
        self.supervisor: WorkerSupervisor | None = None
        self._in_process: InProcessWorker | None = None
        self.worker_credential: str | None = None  # for `quarry worker`s beside our store
        self.originals = Originals(settings.originals_dir)
        self.access = access_control(
            settings.api_key_set,
            None if embeddings_only else self.resources.redis_client,
            "" if embeddings_only else namespace(settings),
            settings.audit_max,
            keys_marker(settings),
        )
        wait = settings.batch_wait_ms / 1000
        self.search_batcher: MicroBatcher[SearchKey, str, SearchResult] = MicroBatcher(
            "search",
            self._search_batch,
            max_items=settings.batch_max_items,
            max_wait_s=wait,
            on_batch=self.metrics.batch_observer("search"),
            max_depth=settings.model_queue_max,
        )
        self.embed_batcher: MicroBatcher[EmbedKey, str, tuple[np.ndarray, int]] = MicroBatcher(
            "embeddings",
            self._embed_batch,
            max_items=settings.batch_max_items,
            max_wait_s=wait,
            on_batch=self.metrics.batch_observer("embeddings"),
            max_depth=settings.model_queue_max,
        )
        self.rerank_gate = AdmissionGate("rerank", settings.model_queue_max)
        self.model_error: QuarryError | None = None
        self.metrics.watch(
            LiveSources(
                model_stats=self.model_stats,
                cache_stats=self.cache_stats,
                queue_depth=lambda: self._jobs.depth if self._jobs else 0,
                ingest_queue=lambda: self._jobs.snapshot if self._jobs else None,
                jobs_finished=lambda: dict(self._jobs.finished) if self._jobs else {},
                batch_depth=lambda: {
                    "search": self.search_batcher.depth,
                    "embeddings": self.embed_batcher.depth,
                    "rerank": self.rerank_gate.depth,
                },
                servers=self.embedding_servers,
                readiness=self._readiness_flags,
                data_dir=self._data_dir_space,
            )
        )

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def jobs(self) -> JobService:
        if self._jobs is None:
            raise RuntimeError("the app is not started")
        return self._jobs

    async def start(self) -> None:
        if self.embeddings_only:  # a model node: no store, no cache, no jobs, no data dir
            self.embed_batcher.start()
            threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()
            return
        self.resources.claim()  # first: a second owner of this data dir fails here
        self.search_batcher.start()
        self.embed_batcher.start()
        threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()
        redis_url = await asyncio.to_thread(self.resources.redis_url)
        name = queue_name(self.settings.queue_name, self.settings.data_dir)
        s = self.settings
        queue = IngestQueue(
            connect(redis_url, name), s.worker_heartbeat_s, s.worker_retry_s, s.worker_retry_max_s
        )
        self._jobs = JobService(
            FileJobStore(self.settings.jobs_dir),
            queue,
            self.originals,
            self._job_finished,
            lease_s=s.lease_s,
            free_floor_bytes=s.min_free_mb * 1_000_000,
            retention_s=s.job_retention_h * 3600,
        )
        if not s.qdrant_url:  # external workers beside the embedded store hand it batches
            self.worker_credential = await asyncio.to_thread(worker_credential, s.data_dir, True)
        self._reconciler = asyncio.create_task(
            self._jobs.run_reconciler(self.settings.reconcile_s), name="job-reconciler"
        )
        self.sources = SourceRunner(
            SourceRegistry(s.data_dir / "sources"),
            ServedQuarry(self, asyncio.get_running_loop()),
            s.data_dir / "sync",
            Allowed(s.sync_root_paths, s.sync_bucket_list),
        )
        self._schedule = asyncio.create_task(self._run_schedule(), name="source-schedule")
        await asyncio.to_thread(self._start_workers, redis_url)
        self.migrations = Migrations(self.resources, s.migrate_keep_h * 3600)
        await asyncio.to_thread(self.migrations.resume_all)

    def _start_workers(self, redis_url: str) -> None:
        """Who takes files from the queue: with the embedded store, this process (it owns
        the store and the model: no hop over HTTP); with a Qdrant server, supervised
        `quarry worker` processes writing to it directly."""
        s = self.settings
        if s.workers == 0:
            log.info("QUARRY_WORKERS=0: external `quarry worker` processes do the ingestion")
            return
        if not s.qdrant_url or self.url is None:
            self._in_process = InProcessWorker(self.resources, s.ingest_slots)
            self._in_process.start()
            return
        self.supervisor = WorkerSupervisor(
            s.worker_count, s.worker_concurrency, self._worker_env(redis_url), s.worker_grace_s
        )
        self.supervisor.start()

    def _worker_env(self, redis_url: str) -> dict[str, str]:
        """What a supervised worker needs (it writes to the Qdrant server itself): the
        queue's Redis and, when the model runs here, this server as its embedding server."""
        assert self.url is not None
        env = dict(os.environ) | {"QUARRY_REDIS_URL": redis_url}
        # Its own key: the operator's keys may all be stored ones, or scoped, or limited.
        key = self.access.worker_key()
        env["QUARRY_API_KEY"] = key
        if not self.resources.remote:
            try:
                source = self.resources.model_source
            except QuarryError as exc:  # /readyz says why; the workers' files wait, retrying
                log.error("workers get no model: %s", exc.message)
                return env
            env |= {
                "QUARRY_EMBEDDING_URLS": f"{self.url}/v1",
                "QUARRY_EMBEDDING_MODEL": str(source.path),
                "QUARRY_SERVED_MODEL_NAME": source.model_id,
                "QUARRY_EMBEDDING_REVISION": source.revision,
            }
            env["QUARRY_EMBEDDING_API_KEY"] = key
        return env

    def _warm_up(self) -> None:
        """Load the model now (or, remote, its tokenizer), so the first request does not wait."""
        try:
            if self.resources.remote:
                self.resources.base_embedder.special_tokens()
            else:
                self.resources.base_embedder.embed_queries(["warm-up"], None)
            self.model_error = None
        except QuarryError as exc:
            self.model_error = exc
            log.error("model not loaded: %s", exc.message)

    async def stop(self) -> None:
        # Workers first: they hand their batches to this process until they are gone.
        if self.supervisor is not None:
            await asyncio.to_thread(self.supervisor.stop)
        if self._in_process is not None:
            await asyncio.to_thread(self._in_process.stop)
        if self._reconciler is not None:
            self._reconciler.cancel()
        if self._schedule is not None:
            self._schedule.cancel()
        if self.migrations is not None:  # paused between documents: resumed at next start
            await asyncio.to_thread(self.migrations.close)
        await self.search_batcher.stop()
        await self.embed_batcher.stop()
        if self._jobs is not None:
            await self._jobs.queue.close()
        self.resources.close()

    async def _run_schedule(self) -> None:
        """Start the runs of the sources whose schedule is due, every few seconds."""
        assert self.sources is not None
        while True:
            try:
                await asyncio.to_thread(self.sources.tick)
                if self.migrations is not None:
                    await asyncio.to_thread(self.migrations.expire)
            except Exception:  # a source's file unreadable, say: the next tick tries again
                log.exception("the sources' schedule failed a tick")
            await asyncio.sleep(self.sources.tick_s)

    # -- jobs ----------------------------------------------------------------------------

    def _job_finished(self, job: Job) -> None:
        if job.started_at and job.finished_at:
            self.metrics.job_seconds.labels(job.state).observe(job.finished_at - job.started_at)

    def reingest(self, collection: str, doc_id: str) -> Job:
        """Parse, chunk and embed a stored document again from its kept original.

        The live version stays searchable until the new one is completely stored: the job
        overwrites its chunks in place, then prunes those past the new count.
        """
        store = self.resources.store
        info = store.document(collection, doc_id)
        if info is None:
            raise NotFoundError(f"no document {doc_id!r} in collection {collection!r}")
        original = self.originals.find(doc_id)
        if original is None:
            raise OriginalMissingError(
                f"{info.source}: its original file is not kept here (it was not uploaded "
                "through the API); upload it again instead",
                detail={"doc_id": doc_id},
            )
        self.resources.check_recipe_early(collection)
        with original.open("rb") as stream:
            job, _ = stage_upload(
                self.settings.jobs_dir,
                collection,
                info.metadata,
                original.stat().st_size + 1,
                [(info.source, stream)],
                force=True,
                versions=self.jobs.versions,
            )
        return job

    def delete_document(self, collection: str, doc_id: str) -> int:
        return delete_document(self.resources.store, self.originals, collection, doc_id)

    # -- model work (run on the batchers' threads) ------------------------------------
    def model_stats(self) -> ModelStats | None:
        return self.resources.base_embedder.stats if self.resources.model_loaded else None

    def embedding_servers(self) -> list[ServerSnapshot]:
        """The remote embedding servers and their state (none when the model runs here)."""
        if not self.resources.remote or "base_embedder" not in self.resources.__dict__:
            return []
        embedder = self.resources.base_embedder
        return embedder.balancer.snapshot() if isinstance(embedder, RemoteEmbedder) else []

    def cache_stats(self) -> CacheStats:
        """Counts so far; never builds the embedder (a scrape must not load a model)."""
        built = "embedder" in self.resources.__dict__
        return self.resources.embedder.stats if built else CacheStats()

    def _search_batch(self, key: SearchKey, queries: list[str]) -> list[SearchResult]:
        """Search with the collection's model; a search that met a migration's swap (the
        recipe moved on while it ran) is run again on the new vectors, never answered from
        a mix or failed."""
        store = self.resources.store
        for _ in range(3):
            before = store.recipe(key.collection)
            try:
                found = self._search_once(key, queries)
            except Exception:
                if _moved(before, store.recipe(key.collection)):
                    continue
                raise
            if not _moved(before, store.recipe(key.collection)):
                return found
        return self._search_once(key, queries)

    def _search_once(self, key: SearchKey, queries: list[str]) -> list[SearchResult]:
        collection = key.collection
        require_collection(self.resources.store, collection)
        service = self.resources.search_service(collection)
        return service.search_many(
            collection,
            queries,
            top_k=key.top_k,
            filters=json.loads(key.filters_json),
            instruction=key.instruction,
            score_threshold=key.threshold,
            plan=service.plan(key.mode, key.rrf_k, key.weights, key.vectors),
            rerank=key.rerank,
            rerank_top_n=key.rerank_top_n,
            profile=key.profile,
        )

    def _embed_batch(self, key: EmbedKey, texts: list[str]) -> list[tuple[np.ndarray, int]]:
        role, instruction = key
        resources = self.resources
        embedder = resources.base_embedder if self.embeddings_only else resources.embedder
        if role == "query":
            vectors = embedder.embed_queries(texts, instruction or self.settings.query_instruction)
            counted = instruction or self.settings.query_instruction
        else:
            vectors = embedder.embed_documents(texts)
            counted = None
        tokens = self.resources.base_embedder.token_counts(texts, counted)
        return list(zip(vectors, tokens, strict=True))

    # -- health --------------------------------------------------------------------------
    def readiness(self) -> Readiness:
        return readiness(self)

    def _readiness_flags(self) -> tuple[str, dict[str, bool]] | None:
        """/readyz for the metrics scrape: its status and each check's ok."""
        if self._jobs is None and not self.embeddings_only:
            return None  # not started: readiness would fail on the missing job service
        found = self.readiness()
        return found.status, {name: bool(c["ok"]) for name, c in found.checks.items()}

    def _data_dir_space(self) -> DataDirSpace | None:
        return None if self.embeddings_only else data_dir_space(self.settings)


def _moved(before: CollectionRecipe | None, after: CollectionRecipe | None) -> bool:
    """Whether the collection's vectors changed model between two reads (a swap)."""
    return before is not None and after is not None and not same_vectors(before.vectors_key, after)
