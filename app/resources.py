"""Builds Quarry's parts from `Settings`, each on first use, and closes them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import fields
from functools import cached_property
from typing import Any, TypeVar

import redis

from app.migration_state import refuse_while_migrating
from app.model_kit import (
    chunker_for,
    local_embedder,
    planned_engine,
)
from app.model_kits import ModelKits
from app.ownership import DataDirClaim
from app.settings import Settings
from embedding.balancer import RequestObserver
from embedding.cache import CachedEmbedder, RedisVectorCache
from embedding.default_model import ModelChoice, choose_model
from embedding.errors import InvalidInputError, ModelLoadError
from embedding.languages import model_languages
from embedding.model_source import ModelSource
from embedding.protocol import Embedder
from embedding.redis_server import EmbeddedRedis
from embedding.remote import RemoteEmbedder, RemoteOptions
from embedding.rerankers import Reranker, load_reranker
from embedding.st_embedder import SentenceTransformerEmbedder
from ingest.chunking import Chunker, ChunkStrategy, WholeDocument
from ingest.ledger import FailureLedger
from ingest.ocr import OcrOptions, missing_languages, parse_languages, tesseract_available
from ingest.parse_pool import ParseLimits, ParsePool
from ingest.pipeline import IngestObserver, IngestPipeline, PipelineConfig
from retrieval.edge_store import EdgeStore
from retrieval.models import CollectionRecipe, SearchPlan
from retrieval.owner_store import OwnerStore
from retrieval.protocol import IngestStore, VectorStore
from retrieval.search import SearchService
from retrieval.sparse import BM25_SCHEME, encoder

log = logging.getLogger(__name__)

T = TypeVar("T")


def settings_for(kind: type[T], settings: Settings, prefix: str, **given: Any) -> T:
    """A part's options dataclass from the settings named `prefix + field` (or `given`)."""
    values = {
        f.name: given[f.name] if f.name in given else getattr(settings, prefix + f.name)
        for f in fields(kind)  # type: ignore[arg-type]
    }
    return kind(**values)


class Resources:
    """Owns the model, the store and the cache for one process; nothing loads until needed.

    Opening an embedded part (the qdrant-edge store, the embedded Redis) first claims the
    data dir for this process; the claim is held until `close`.
    """

    def __init__(
        self,
        settings: Settings,
        role: str = "a quarry command",
        store_owner: str | None = None,
        owner_key: str | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self.store_owner = store_owner  # a worker's: the server that owns the embedded store
        self.owner_key = owner_key  # and one of its API keys
        self._lock = threading.Lock()
        self._embedded_redis: EmbeddedRedis | None = None
        self._claim = DataDirClaim(settings.data_dir)
        self.kits = ModelKits(self)  # the models collections are served with
        self.server_observer: RequestObserver | None = None  # set before first use

    @property
    def uses_embedded_parts(self) -> bool:
        return not (self.settings.qdrant_url and self.settings.redis_url)

    def claim(self, url: str | None = None) -> None:
        """Take the data dir for this process (a no-op when everything is a server).

        Raises:
            DataDirBusyError: another live process owns it; the message names it.
        """
        with self._lock:
            if self.uses_embedded_parts and not self._claim.held:
                self._claim.acquire(self.role, url)

    @cached_property
    def model_choice(self) -> ModelChoice:
        """The model in use (configured, or the best default this machine can load)."""
        s = self.settings
        gpu_allowed = s.device == "auto" or s.device.startswith("cuda")
        return choose_model(
            s.embedding_model,
            s.embedding_revision,
            s.served_model_name,
            weights=not self.remote,
            cuda=None if gpu_allowed else False,
        )

    @property
    def model_source(self) -> ModelSource:
        return self.model_choice.source

    @property
    def remote(self) -> bool:
        """The model runs on embedding servers (QUARRY_EMBEDDING_URLS), not here."""
        return bool(self.settings.embedding_url_list)

    def check_dimension(self) -> None:
        """Refuse a Matryoshka size wider than the model, from its config alone.

        Raises:
            ModelLoadError: QUARRY_EMBEDDING_DIM is larger than the model's width.
        """
        wanted = self.settings.embedding_dim
        width = self.model_source.native_dimension
        if wanted is not None and width is not None and wanted > width:
            raise ModelLoadError(
                f"QUARRY_EMBEDDING_DIM={wanted} is larger than the width of "
                f"{self.model_source.model_id!r} ({width}); use {width} or less"
            )

    @cached_property
    def base_embedder(self) -> SentenceTransformerEmbedder | RemoteEmbedder:
        s = self.settings
        if self.remote:
            options = settings_for(
                RemoteOptions,
                s,
                "remote_",
                urls=s.embedding_url_list,
                model_name=s.served_model_name or self.model_source.model_id,
                api_key=s.embedding_api_key,
            )
            return RemoteEmbedder(
                self.model_source,
                options,
                dimension=s.embedding_dim,
                max_length=s.max_length,
                observer=self.server_observer,
            )
        return local_embedder(self.settings, self.model_source, self.settings.embedding_dim)

    def redis_url(self) -> str:
        """QUARRY_REDIS_URL, or the embedded server's (started now; this process owns it)."""
        url = self.settings.redis_url
        if url:
            return url
        self.claim()
        with self._lock:
            if self._embedded_redis is None:
                self._embedded_redis = EmbeddedRedis(self.settings.redis_dir)
        return self._embedded_redis.url()

    def redis_client(self) -> redis.Redis:
        """A new client of the Redis this process uses (the cache's, the queue's, the keys')."""
        return self._new_redis_client()

    def _new_redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.redis_url(), socket_connect_timeout=1.0, socket_timeout=2.0
        )

    @cached_property
    def cache(self) -> RedisVectorCache:
        return RedisVectorCache(self._new_redis_client)

    @cached_property
    def embedder(self) -> CachedEmbedder:
        return CachedEmbedder(self.base_embedder, self.cache)

    @cached_property
    def store(self) -> VectorStore:
        url = self.settings.qdrant_url
        if url:
            # qdrant-client imports slowly: only when a server is configured
            from retrieval.qdrant_store import QdrantOptions, QdrantServerStore

            s = self.settings
            options = settings_for(QdrantOptions, s, "qdrant_")
            return QdrantServerStore.connect(url, s.qdrant_api_key, options)
        self.claim()
        return EdgeStore(self.settings.qdrant_path)

    @cached_property
    def ingest_store(self) -> IngestStore:
        """Where ingestion writes: the store, or (a worker beside the embedded store's owner)
        the owner, over HTTP."""
        if self.store_owner and not self.settings.qdrant_url:
            return OwnerStore(self.store_owner, self.owner_key)
        return self.store

    @cached_property
    def ocr_options(self) -> OcrOptions:
        """QUARRY_OCR_*; configured packs Tesseract lacks are named in the log and /readyz."""
        s = self.settings
        options = OcrOptions(
            parse_languages(s.ocr_languages), s.ocr_detect_script, s.ocr_dpi, s.ocr_threads
        )
        missing = missing_languages(options)
        if missing and tesseract_available():
            log.warning(
                "QUARRY_OCR_LANGUAGES names packs Tesseract lacks here: %s (install "
                "tesseract-ocr-<pack>, e.g. apt-get install %s)",
                ", ".join(missing),
                " ".join(f"tesseract-ocr-{m.replace('_', '-')}" for m in missing),
            )
        return options

    @cached_property
    def parse_pool(self) -> ParsePool:
        s = self.settings
        limits = ParseLimits(
            workers=s.parse_workers,
            timeout_s=s.parse_timeout_s,
            memory_mb=s.parse_memory_mb,
            max_inflated_mb=s.max_inflated_mb,
            ocr=self.ocr_options,
            ocr_page_s=s.ocr_page_timeout_s,
            convert_timeout_s=s.convert_timeout_s,
        )
        return ParsePool(limits)

    def chunker(self) -> Chunker:
        return chunker_for(self.settings, self.base_embedder)

    def recipe(
        self, instruction: str | None = None, dimension: int | None = None
    ) -> CollectionRecipe:
        """This configuration's recipe (the dimension loads the model unless given)."""
        base = self.base_embedder
        dimension = dimension or base.dimension
        return CollectionRecipe(
            model=self.model_source.model_id,
            dimension=dimension,
            instruction=instruction or self.settings.query_instruction,
            revision=self.model_source.revision,
            normalize=True,
            max_length=base.max_tokens,
            sparse=BM25_SCHEME if self.settings.sparse_vectors else "",
            small_dim=self._small_dim(dimension),
            engine=base.recipe.engine,
        )

    def _small_dim(self, dimension: int) -> int:
        """QUARRY_SMALL_DIM, checked against the model (a Matryoshka one, and wider).

        Raises:
            InvalidInputError: the model is not Matryoshka-trained, or not that wide.
        """
        small = self.settings.small_dim
        if not small:
            return 0
        if not self.model_source.uses_last_token:
            raise InvalidInputError(
                f"QUARRY_SMALL_DIM={small}: {self.model_source.model_id!r} is not a Matryoshka "
                "model (Qwen3-Embedding is); its prefixes are not embeddings. Unset it."
            )
        if not 32 <= small < dimension:
            raise InvalidInputError(
                f"QUARRY_SMALL_DIM={small} must be from 32 to below the dimension ({dimension})"
            )
        return small

    @property
    def configured_engine(self) -> str:
        """The engine the configured model's vectors are made with: as run once it is
        loaded (a runtime that could not run it leaves fp32), as planned before."""
        if self.model_loaded and isinstance(self.base_embedder, SentenceTransformerEmbedder):
            return self.base_embedder.vectors_engine
        return self._planned_engine

    @cached_property
    def _planned_engine(self) -> str:
        return planned_engine(self.settings, self.model_source)

    def check_recipe_early(self, collection: str) -> None:
        """Fail before any work when the collection was built otherwise (no model load)."""
        stored = self.ingest_store.recipe(collection)
        if stored is None or self.kits.for_collection(collection, stored) is not None:
            return
        wanted_dim = self.settings.embedding_dim or stored.dimension
        stored.check(self.recipe(dimension=wanted_dim), collection)

    def pipeline(
        self,
        collection: str,
        observer: IngestObserver | None = None,
        *,
        whole_documents: bool = False,
        instruction: str | None = None,
        force: bool = False,
        optimize: bool = True,
        chunker: Callable[[], ChunkStrategy] | None = None,
        embedder: Embedder | None = None,
    ) -> IngestPipeline:
        """A pipeline into `collection`; `chunker` makes its chunker (default: a new one
        for this model's tokenizer, or whole documents)."""
        s = self.settings
        kit = self.kits.for_collection(collection)
        recipe: Callable[[], CollectionRecipe] = lambda: self.recipe(instruction)  # noqa: E731
        if kit is not None:  # the collection's own model, not the configured one
            sparse, small = s.sparse_vectors, s.small_dim
            recipe = lambda: kit.recipe(instruction or "", sparse, small)  # noqa: E731
            if not kit.is_configured:  # (a caller's embedder and chunker are the configured's)
                embedder, chunker = kit.embedder, lambda: kit.chunker
        config = PipelineConfig(
            collection=collection,
            recipe=recipe,
            parse_workers=s.parse_workers,
            force=force,
            optimize=optimize,
            ocr_floor=s.ocr_min_confidence,
            # Remote: one call sends enough requests at once to keep every server busy.
            embed_slice=s.remote_batch_size * len(s.embedding_url_list) * 2 if self.remote else 32,
        )
        if chunker is None:
            chunker = WholeDocument if whole_documents else self.chunker
        ledger = FailureLedger(self.settings.data_dir / "failures" / f"{collection}.json")
        return IngestPipeline(
            self.ingest_store,
            (lambda: embedder) if embedder is not None else (lambda: self.embedder),
            chunker,
            config,
            observer,
            ledger,
            self.parse_pool,
        )

    @cached_property
    def reranker(self) -> Reranker:
        """The configured reranker (loaded on its first use, not here).

        Raises:
            InvalidInputError: none is configured.
            ModelLoadError: QUARRY_RERANK_MODEL is neither on disk nor downloadable.
        """
        s = self.settings
        if not (s.rerank_model or s.rerank_url):
            raise InvalidInputError(
                "rerank: no reranker is configured; set QUARRY_RERANK_MODEL (a CrossEncoder "
                "or Qwen3-Reranker) or QUARRY_RERANK_URL (a /rerank server)",
                detail={"field": "rerank"},
            )
        return load_reranker(
            s.rerank_model or "", device=s.device, max_length=s.max_length, url=s.rerank_url
        )

    def search_service(self, collection: str) -> SearchService:
        """Search `collection` after checking that its vectors match our model's.

        A query uses the instruction it names, else the collection's default.
        """
        stored = self.store.recipe(collection)  # read once for the whole batch
        kit = self.kits.for_collection(collection, stored)
        if stored is not None and kit is None:
            stored.check(self.recipe(dimension=self.settings.embedding_dim), collection)
        s = self.settings
        return SearchService(
            kit.embedder if kit else self.embedder,
            self.store,
            stored.instruction if stored else s.query_instruction,
            sparse=stored.sparse if stored else "",
            defaults=SearchPlan(
                "hybrid" if stored and stored.sparse else "dense",
                candidates=s.hybrid_candidates,
                rrf_k=s.rrf_k,
                vectors="two-stage" if stored and stored.small_dim else "full",
            ),
            reranker=lambda: self.reranker,
            rerank_top_n=s.rerank_top_n,
            languages=model_languages(kit.source.model_id, kit.source.path)
            if kit
            else self.dense_languages,
        )

    @cached_property
    def dense_languages(self) -> frozenset[str] | None:
        """The languages the embedding model reads (None: every language)."""
        source = self.model_source
        return model_languages(source.model_id, source.path)

    def backfill_sparse(self, collection: str) -> int:
        """Give a collection built before BM25 vectors existed its sparse vectors, or move
        one to the current BM25 scheme (its analyser), from the stored chunk text (no
        re-embedding); returns the chunks updated (0: already in the current scheme).

        Raises:
            NotFoundError: no such collection.
            MigrationBusyError: it is being moved to another model.
        """
        refuse_while_migrating(self.settings.data_dir, collection, "rebuild its BM25 vectors")
        return self.store.add_sparse(collection, BM25_SCHEME, encoder(BM25_SCHEME).documents)

    @property
    def model_loaded(self) -> bool:
        return "base_embedder" in self.__dict__ and self.base_embedder.loads > 0

    def close(self) -> None:
        if "parse_pool" in self.__dict__:
            self.parse_pool.close()
        if isinstance(self.__dict__.get("ingest_store"), OwnerStore):
            self.ingest_store.close()
        if "store" in self.__dict__:
            self.store.close()
        if "base_embedder" in self.__dict__ and isinstance(self.base_embedder, RemoteEmbedder):
            self.base_embedder.close()
        if self._embedded_redis is not None:
            self._embedded_redis.stop()
        self._claim.release()
