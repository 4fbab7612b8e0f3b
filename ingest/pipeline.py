"""The ingestion pipeline: parse (worker processes) -> chunk -> embed -> upsert (writer thread).

Parsing runs ahead of the model and the writer drains a bounded queue, so the model is not
left waiting on either. A document is one version of one source (its source key): its
chunks have deterministic ids and carry the chunk count, so a document is complete when all
its chunks are stored, and an unchanged, complete document costs one hash and two lookups.

Replacing a source is crash-safe: the new version is stored completely before anything of
the old one is removed, and whenever a complete version is seen (new or unchanged) every
older chunk of that source is pruned, so a run resumed after a crash finishes the swap.
Versions are ordered by `seq`, the number acknowledged with the upload: a version that
finds a newer one stored is dropped (`superseded`), whatever order workers finish in.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from embedding.errors import QuarryError
from embedding.protocol import Embedder
from ingest.chunking import ChunkStrategy
from ingest.failpoints import failpoint
from ingest.ledger import FailureLedger
from ingest.models import Chunk, Element, FileError, IngestReport, ParseError, Stopped
from ingest.ocr import low_confidence_warning
from ingest.parse_pool import ParsePool
from ingest.sources import FileSource, Source, content_hash, document_id
from retrieval.models import ChunkRecord, CollectionRecipe, chunk_id
from retrieval.protocol import IngestStore
from retrieval.sparse import encoder

log = logging.getLogger(__name__)


class IngestObserver(Protocol):
    """Progress callbacks; called from pipeline threads."""

    def file_done(self, name: str, status: str, chunks: int, error: FileError | None) -> None: ...

    def file_retry(self, name: str, error: FileError) -> None:
        """`name` failed for a reason that may pass (`error.kind` is not `final`)."""
        ...

    def file_stage(self, name: str, stage: str, count: int) -> None:
        """`name` got through `stage` (parsed, chunked, embedded, stored) with `count` items."""
        ...

    def file_warning(self, name: str, message: str) -> None:
        """`name` goes in, but something in it needs the user's eye (unsure OCR)."""
        ...

    def chunks_queued(self, count: int) -> None: ...

    def chunks_embedded(self, count: int) -> None: ...

    def chunks_stored(self, count: int) -> None: ...

    def check(self) -> None:
        """Raise `Stopped` when the work must stop (shutdown, cancel)."""
        ...


class SilentObserver:
    def file_done(self, name: str, status: str, chunks: int, error: FileError | None) -> None:
        pass

    def file_retry(self, name: str, error: FileError) -> None:
        pass

    def file_stage(self, name: str, stage: str, count: int) -> None:
        pass

    def file_warning(self, name: str, message: str) -> None:
        pass

    def chunks_queued(self, count: int) -> None:
        pass

    def chunks_embedded(self, count: int) -> None:
        pass

    def chunks_stored(self, count: int) -> None:
        pass

    def check(self) -> None:
        pass


@dataclass
class _Prepared:
    source: Source
    doc_id: str
    chunks: list[Chunk] = field(default_factory=list)
    doc_fields: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    unchanged: bool = False
    superseded: bool = False
    stored_chunks: int = 0
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
    embed_window: int = 256  # chunks gathered before they are embedded and stored together
    embed_slice: int = 32  # chunks per embedding call: progress moves this often
    force: bool = False  # re-parse and re-embed even unchanged or known-bad files
    optimize: bool = True  # after a run that stored something (a worker: once per job)
    ocr_floor: float = 60.0  # OCR'd pages less sure than this are marked, with a warning


class IngestPipeline:
    """Ingests sources into one collection; bad files are reported, never fatal to the batch."""

    def __init__(
        self,
        store: IngestStore,
        embedder: Callable[[], Embedder],
        chunker: Callable[[], ChunkStrategy],
        config: PipelineConfig,
        observer: IngestObserver | None = None,
        ledger: FailureLedger | None = None,
        parse_pool: ParsePool | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger or FailureLedger(None)
        self._embedder_factory = embedder
        self._chunker_factory = chunker
        self.config = config
        self.observer = observer or SilentObserver()
        self.parse_pool = parse_pool
        self._chunker: ChunkStrategy | None = None
        self._chunker_lock = threading.Lock()
        self.embedder_used = False

    def _get_chunker(self) -> ChunkStrategy:
        with self._chunker_lock:
            if self._chunker is None:
                self._chunker = self._chunker_factory()
            return self._chunker

    # -- stage 1: parse and chunk (worker threads) ------------------------------------
    def _parse(self, source: Source) -> list[Element]:
        """Parse, trying once more (in a fresh worker) when the failure does not prove the
        bytes bad: a parser's generic exception, a worker that died."""
        try:
            return self._parse_once(source)
        except ParseError as exc:
            if not exc.suspect:
                raise
            log.warning("%s; trying once more", exc.message)
            return self._parse_once(source)

    def _parse_once(self, source: Source) -> list[Element]:
        if self.parse_pool is not None and isinstance(source, FileSource):
            return self.parse_pool.parse(source.path, source.name, self.observer.check)
        return source.parse()

    def _prepare(self, source: Source) -> _Prepared:
        try:
            data = source.content()
        except ParseError as exc:
            return _Prepared(source, "", error=FileError(source.name, exc.code, exc.message))
        doc_id = document_id(source.name, data)
        prepared = _Prepared(source, doc_id, seq=getattr(source, "seq", 0))
        try:
            if prepared.seq and self.store.newer_version(
                self.config.collection, source.name, doc_id, prepared.seq
            ):
                prepared.superseded = True  # a newer acknowledged version is stored
                return prepared
            if not self.config.force:
                known_failure = self.ledger.get(doc_id, source.name)
                if known_failure is not None:
                    prepared.error = known_failure
                    return prepared
                existing = self.store.document(self.config.collection, doc_id)
                if existing is not None and existing.complete:
                    if prepared.seq:  # it is now this version: newer than any in flight
                        self.store.stamp_version(self.config.collection, doc_id, prepared.seq)
                    prepared.unchanged = True
                    prepared.stored_chunks = existing.chunks
                    return prepared
            self.observer.check()
            failpoint("parsing")
            elements = self._parse(source)
            self.observer.file_stage(source.name, "parsed", len(elements))
            prepared.chunks = self._get_chunker().chunk(elements)
            self.observer.file_stage(source.name, "chunked", len(prepared.chunks))
            warning = low_confidence_warning(source.name, elements, self.config.ocr_floor)
            if warning:
                self.observer.file_warning(source.name, warning)
            if not prepared.chunks:
                raise ParseError("no_text", f"{source.name}: no text could be extracted")
            prepared.doc_fields = source.describe() | {"content_hash": content_hash(data)}
        except Stopped:
            raise
        except ParseError as exc:
            prepared.error = FileError(source.name, exc.code, exc.message)
        except QuarryError as exc:
            prepared.error = FileError(source.name, exc.code, exc.message, "transient")
        except Exception as exc:  # a dependency, not the file: try again later
            log.exception("unexpected failure on %s (will be retried)", source.name)
            message = f"{source.name}: {type(exc).__name__}: {exc}"
            prepared.error = FileError(source.name, "internal_error", message, "transient")
        if prepared.error is not None and prepared.error.final:
            self.ledger.record(doc_id, prepared.error)
        return prepared

    def _prepared_stream(self, sources: Sequence[Source]) -> Iterator[_Prepared]:
        """Results in input order, with parsing a bounded distance ahead of the consumer."""
        if len(sources) == 1:  # a queue consumer's one file: on its own, long-lived thread
            yield self._prepare(sources[0])  # (whose tokenizer copy is kept across files)
            return
        ahead = max(4, self.config.parse_workers * 2)
        with ThreadPoolExecutor(self.config.parse_workers, thread_name_prefix="parse") as pool:
            pending: list[Future[_Prepared]] = []
            items = iter(sources)
            try:
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
            finally:
                for future in pending:
                    future.cancel()

    # -- stage 3: store (writer thread) -----------------------------------------------
    def _writer(
        self, batches: queue.Queue[_Batch | None], report: IngestReport, failed: list[BaseException]
    ) -> None:
        while True:
            batch = batches.get()
            if batch is None:
                return
            self._write(batch, report, failed)

    def _write(self, batch: _Batch, report: IngestReport, failed: list[BaseException]) -> None:
        """Store one embedded batch and settle its files; a failure goes into `failed`
        (surfaced by run()), and batches after one are dropped."""
        if failed:
            return
        try:
            self.store.upsert(self.config.collection, batch.records)
            self.observer.chunks_stored(len(batch.records))
            for doc in batch.docs:  # a batch always holds whole documents
                self.observer.file_stage(doc.source.name, "stored", len(doc.chunks))
                failpoint("after_upsert")
                if self._superseded(doc):
                    self.store.delete_document(self.config.collection, doc.doc_id)
                    report.superseded += 1
                    self.observer.file_done(doc.source.name, "superseded", 0, None)
                    continue
                self._prune(doc)
                failpoint("after_prune")
                report.ingested += 1
                report.chunks += len(doc.chunks)
                self.observer.file_done(doc.source.name, "ingested", len(doc.chunks), None)
        except BaseException as exc:
            failed.append(exc)

    def _superseded(self, doc: _Prepared) -> bool:
        """A newer acknowledged version of this source was stored meanwhile: this one, done
        late, is dropped (the newer one prunes anything older once it is complete)."""
        return bool(doc.seq) and self.store.newer_version(
            self.config.collection, doc.source.name, doc.doc_id, doc.seq
        )

    def _prune(self, doc: _Prepared) -> int:
        """Remove every chunk of this source that is not part of this complete version:
        older versions (never a newer one) and this version's chunks past its count."""
        count = len(doc.chunks) or doc.stored_chunks
        removed = self.store.prune_source(
            self.config.collection, doc.source.name, doc.doc_id, count, doc.seq
        )
        if removed:
            log.info("%s: removed %d chunks of its previous version", doc.source.name, removed)
        return removed

    # -- stage 2: embed (this thread) -------------------------------------------------
    def run(self, sources: Sequence[Source]) -> IngestReport:
        """Ingest `sources`.

        Raises:
            Stopped: the observer asked to stop; what was stored stays, the rest is undone.
            QuarryError: the store or the model failed (every unfinished file is unfinished).
        """
        started = time.perf_counter()
        report = IngestReport(files=len(sources))
        failed: list[BaseException] = []
        # A queue consumer's one file is stored on its own thread, as it is embedded (a
        # thread started and joined per file costs more than it overlaps); many files are
        # stored by a writer thread while the next window is embedded.
        batches: queue.Queue[_Batch | None] = queue.Queue(maxsize=4)
        writer = threading.Thread(
            target=self._writer, args=(batches, report, failed), name="upsert", daemon=True
        )
        alone = len(sources) == 1

        def store(batch: _Batch) -> None:
            if alone:
                self._write(batch, report, failed)
            else:
                batches.put(batch)

        if not alone:
            writer.start()
        window: list[_Prepared] = []
        window_chunks = 0
        try:
            for prepared in self._prepared_stream(sources):
                if failed:
                    break
                self._route(prepared, report)
                if prepared.error is not None or prepared.unchanged or prepared.superseded:
                    continue
                self.observer.chunks_queued(len(prepared.chunks))
                window.append(prepared)
                window_chunks += len(prepared.chunks)
                if window_chunks >= self.config.embed_window:
                    store(self._embed(window))
                    window, window_chunks = [], 0
            if window and not failed:
                store(self._embed(window))
        finally:
            if not alone:
                batches.put(None)
                writer.join()
            self.ledger.save()
        if failed:
            raise failed[0]
        if report.ingested and self.config.optimize:
            self.store.optimize(self.config.collection)
        report.seconds = time.perf_counter() - started
        report.model_loaded = self.embedder_used
        return report

    def _route(self, prepared: _Prepared, report: IngestReport) -> None:
        """Report a file that needs no embedding: failed, to retry, or unchanged."""
        name = prepared.source.name
        error = prepared.error
        if prepared.superseded:
            report.superseded += 1
            self.observer.file_done(name, "superseded", 0, None)
        elif error is not None and error.final:
            report.errors.append(error)
            self.observer.file_done(name, "failed", 0, error)
        elif error is not None:
            report.retrying.append(error)
            self.observer.file_retry(name, error)
        elif prepared.unchanged:
            # A previous run may have died between storing this version and pruning the
            # old one: finish the swap. Then it was this run that completed the file.
            if self._prune(prepared):
                report.ingested += 1
                self.observer.file_done(name, "ingested", prepared.stored_chunks, None)
            else:
                report.unchanged += 1
                self.observer.file_done(name, "unchanged", 0, None)

    def _embed(self, docs: list[_Prepared]) -> _Batch:
        embedder = self._embedder_factory()
        self.embedder_used = True
        texts = [chunk.text for doc in docs for chunk in doc.chunks]
        owners = [d for d, doc in enumerate(docs) for _ in doc.chunks]
        vectors = np.empty((len(texts), 0), dtype=np.float32)
        done = [0] * len(docs)
        step = self.config.embed_slice
        for start in range(0, len(texts), step):
            self.observer.check()
            part = embedder.embed_documents(texts[start : start + step])
            if not vectors.shape[1]:
                vectors = np.empty((len(texts), part.shape[1]), dtype=np.float32)
            vectors[start : start + len(part)] = part
            self.observer.chunks_embedded(len(part))
            failpoint("embedding")
            for d, count in sorted(Counter(owners[start : start + step]).items()):
                done[d] += count
                self.observer.file_stage(docs[d].source.name, "embedded", done[d])
        wanted = self.config.recipe()
        self.store.ensure_collection(self.config.collection, wanted)
        stored = self.store.recipe(self.config.collection)
        # BM25 weights only where the collection has a sparse vector (older ones do not).
        sparse = stored.sparse if stored else ""
        weights = encoder(sparse).documents(texts) if sparse else [None] * len(texts)
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
                    "ocr": chunk.ocr,
                    **({"ocr_confidence": chunk.ocr_confidence} if chunk.ocr else {}),
                    "ingested_at": now,
                    "seq": doc.seq,
                    **doc.doc_fields,
                }
                id_ = chunk_id(doc.doc_id, chunk.index)
                records.append(
                    ChunkRecord(
                        id_, vectors[row], payload, weights[row], sparse, wanted.vectors_key
                    )
                )
                row += 1
        return _Batch(records, docs)
