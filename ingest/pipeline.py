"""The ingestion pipeline: parse (worker threads) -> embed (caller) -> upsert (writer thread).

Parsing runs ahead of the model in a thread pool and the writer drains a bounded queue,
so the model is not left waiting on either. A document's chunks have deterministic ids
and carry the document's chunk count, so a document is complete when all its chunks are
stored; an unchanged, complete document costs one hash and two store lookups.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from embedding.errors import QuarryError
from embedding.protocol import Embedder
from ingest.chunking import ChunkStrategy
from ingest.ledger import FailureLedger
from ingest.models import Chunk, FileError, IngestReport, ParseError
from ingest.sources import Source, document_id
from retrieval.models import ChunkRecord, CollectionRecipe, chunk_id
from retrieval.protocol import VectorStore

log = logging.getLogger(__name__)


class IngestObserver(Protocol):
    """Progress callbacks; called from pipeline threads."""

    def file_done(self, name: str, status: str, chunks: int, error: FileError | None) -> None: ...

    def file_stage(self, name: str, stage: str, count: int) -> None:
        """`name` got through `stage` (parsed, chunked, embedded, stored) with `count` items."""
        ...

    def chunks_queued(self, count: int) -> None: ...

    def chunks_embedded(self, count: int) -> None: ...

    def chunks_stored(self, count: int) -> None: ...


class SilentObserver:
    def file_done(self, name: str, status: str, chunks: int, error: FileError | None) -> None:
        pass

    def file_stage(self, name: str, stage: str, count: int) -> None:
        pass

    def chunks_queued(self, count: int) -> None:
        pass

    def chunks_embedded(self, count: int) -> None:
        pass

    def chunks_stored(self, count: int) -> None:
        pass


@dataclass
class _Prepared:
    source: Source
    doc_id: str
    chunks: list[Chunk] = field(default_factory=list)
    doc_fields: dict[str, Any] = field(default_factory=dict)
    unchanged: bool = False
    error: FileError | None = None


@dataclass
class _Batch:
    records: list[ChunkRecord]
    docs: list[_Prepared]


@dataclass
class PipelineConfig:
    collection: str
    recipe: Callable[[], CollectionRecipe]
    parse_workers: int = 2
    embed_window: int = 256  # chunks gathered before one embed call (sorted and packed inside)


class IngestPipeline:
    """Ingests sources into one collection; bad files are reported, never fatal to the batch."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Callable[[], Embedder],
        chunker: Callable[[], ChunkStrategy],
        config: PipelineConfig,
        observer: IngestObserver | None = None,
        ledger: FailureLedger | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger or FailureLedger(None)
        self._embedder_factory = embedder
        self._chunker_factory = chunker
        self.config = config
        self.observer = observer or SilentObserver()
        self._chunker: ChunkStrategy | None = None
        self._chunker_lock = threading.Lock()
        self.embedder_used = False

    def _get_chunker(self) -> ChunkStrategy:
        with self._chunker_lock:
            if self._chunker is None:
                self._chunker = self._chunker_factory()
            return self._chunker

    # -- stage 1: parse and chunk (worker threads) ------------------------------------
    def _prepare(self, source: Source) -> _Prepared:
        try:
            data = source.content()
            doc_id = document_id(data)
        except ParseError as exc:
            return _Prepared(source, "", error=FileError(source.name, exc.code, exc.message))
        prepared = _Prepared(source, doc_id)
        known_failure = self.ledger.get(doc_id, source.name)
        if known_failure is not None:
            prepared.error = known_failure
            return prepared
        try:
            existing = self.store.document(self.config.collection, doc_id)
            if existing is not None and existing.complete:
                prepared.unchanged = True
                return prepared
            elements = source.parse()
            self.observer.file_stage(source.name, "parsed", len(elements))
            prepared.chunks = self._get_chunker().chunk(elements)
            self.observer.file_stage(source.name, "chunked", len(prepared.chunks))
            if not prepared.chunks:
                raise ParseError("no_text", f"{source.name}: no text could be extracted")
            prepared.doc_fields = source.describe()
        except QuarryError as exc:
            prepared.error = FileError(source.name, exc.code, exc.message)
        except Exception as exc:
            log.exception("unexpected failure on %s", source.name)
            prepared.error = FileError(source.name, "internal_error", f"{source.name}: {exc}")
        if prepared.error is not None:
            self.ledger.record(doc_id, prepared.error)
        return prepared

    def _prepared_stream(self, sources: Sequence[Source]) -> Iterator[_Prepared]:
        """Results in input order, with parsing a bounded distance ahead of the consumer."""
        ahead = max(4, self.config.parse_workers * 4)
        with ThreadPoolExecutor(self.config.parse_workers, thread_name_prefix="parse") as pool:
            pending: list[Future[_Prepared]] = []
            items = iter(sources)
            for source in items:
                pending.append(pool.submit(self._prepare, source))
                if len(pending) >= ahead:
                    break
            while pending:
                result = pending.pop(0).result()
                nxt = next(items, None)
                if nxt is not None:
                    pending.append(pool.submit(self._prepare, nxt))
                yield result

    # -- stage 3: store (writer thread) -----------------------------------------------
    def _writer(
        self, batches: queue.Queue[_Batch | None], report: IngestReport, failed: list[BaseException]
    ) -> None:
        while True:
            batch = batches.get()
            if batch is None:
                return
            if failed:
                continue
            try:
                self.store.upsert(self.config.collection, batch.records)
                self.observer.chunks_stored(len(batch.records))
                for doc in batch.docs:  # a batch always holds whole documents
                    self.observer.file_stage(doc.source.name, "stored", len(doc.chunks))
                    self._finish_document(doc, report)
            except BaseException as exc:  # surfaced by run(); later batches are dropped
                failed.append(exc)

    def _finish_document(self, doc: _Prepared, report: IngestReport) -> None:
        replaced = self.store.delete_source_except(
            self.config.collection, doc.source.name, doc.doc_id
        )
        if replaced:
            log.info("%s: replaced %d chunks of its previous version", doc.source.name, replaced)
        report.ingested += 1
        report.chunks += len(doc.chunks)
        self.observer.file_done(doc.source.name, "ingested", len(doc.chunks), None)

    # -- stage 2: embed (this thread) -------------------------------------------------
    def run(self, sources: Sequence[Source]) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport(files=len(sources))
        batches: queue.Queue[_Batch | None] = queue.Queue(maxsize=4)
        failed: list[BaseException] = []
        writer = threading.Thread(
            target=self._writer, args=(batches, report, failed), name="upsert", daemon=True
        )
        writer.start()
        window: list[_Prepared] = []
        window_chunks = 0
        try:
            for prepared in self._prepared_stream(sources):
                if failed:
                    break
                if prepared.error is not None:
                    report.errors.append(prepared.error)
                    self.observer.file_done(prepared.source.name, "failed", 0, prepared.error)
                    continue
                if prepared.unchanged:
                    report.unchanged += 1
                    self.observer.file_done(prepared.source.name, "unchanged", 0, None)
                    continue
                self.observer.chunks_queued(len(prepared.chunks))
                window.append(prepared)
                window_chunks += len(prepared.chunks)
                if window_chunks >= self.config.embed_window:
                    batches.put(self._embed(window))
                    window, window_chunks = [], 0
            if window and not failed:
                batches.put(self._embed(window))
        finally:
            batches.put(None)
            writer.join()
            self.ledger.save()
        if failed:
            raise failed[0]
        if report.ingested:
            self.store.optimize(self.config.collection)
        report.seconds = time.perf_counter() - started
        report.model_loaded = self.embedder_used
        return report

    def _embed(self, docs: list[_Prepared]) -> _Batch:
        embedder = self._embedder_factory()
        self.embedder_used = True
        texts = [chunk.text for doc in docs for chunk in doc.chunks]
        vectors = embedder.embed_documents(texts)
        recipe = self.config.recipe()
        self.store.ensure_collection(self.config.collection, recipe)
        self.observer.chunks_embedded(len(texts))
        for doc in docs:
            self.observer.file_stage(doc.source.name, "embedded", len(doc.chunks))
        now = datetime.now(UTC).isoformat(timespec="seconds")
        records: list[ChunkRecord] = []
        row = 0
        for doc in docs:
            for chunk in doc.chunks:
                payload = {
                    "doc_id": doc.doc_id,
                    "source": doc.source.name,
                    "chunk_index": chunk.index,
                    "chunk_count": len(doc.chunks),
                    "text": chunk.text,
                    "tokens": chunk.tokens,
                    "page": chunk.page,
                    "element_types": list(chunk.element_types),
                    "languages": list(chunk.languages),
                    "ingested_at": now,
                    **doc.doc_fields,
                }
                records.append(
                    ChunkRecord(chunk_id(doc.doc_id, chunk.index), vectors[row], payload)
                )
                row += 1
        return _Batch(records, docs)
