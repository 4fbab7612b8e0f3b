"""Moving a collection to another embedding model without downtime.

The new collection is built beside the live one (`<name>~next`) with the new model's recipe:
each document from its kept original (parsed and chunked again, in the new model's tokens),
or, where none is kept, from its stored chunk text. Passes repeat until the new one holds
what the live one holds (uploads that arrive meanwhile are carried over by the next pass);
the last pass runs with writes to the collection held, and the store then swaps the two in
one step (an alias on a Qdrant server, two renames under the store's lock embedded):
searches move from the old vectors to the new at once and never see a mix. The old
collection is kept as `<name>~previous` for a rollback, which is the same run the other way.

Every step is idempotent and its progress is in the store itself (which documents the new
collection holds), so a run killed at any stage resumes where it was: `MigrationState` only
records what was asked and the stage reached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from app.migration_state import MigrationState
from app.resources import Resources
from embedding.errors import InvalidInputError, QuarryError
from embedding.protocol import Embedder
from ingest.failpoints import failpoint
from ingest.models import Stopped
from ingest.originals import Originals
from ingest.sources import FileSource
from retrieval.errors import NotFoundError
from retrieval.models import (
    ChunkRecord,
    CollectionRecipe,
    DocumentInfo,
    same_vectors,
    side_name,
)

log = logging.getLogger(__name__)

NEXT, PREVIOUS = "next", "previous"
BATCH = 64  # documents moved per pipeline run (parsed side by side, embedded together)
MAX_PASSES = 5  # then the last pass runs with writes held, however busy the collection is


class Migration:
    """One run of a migration (or a rollback), from whatever stage it had reached."""

    def __init__(
        self,
        resources: Resources,
        state: MigrationState,
        save: Callable[[MigrationState], None],
        cancel: threading.Event | None = None,
        pause: threading.Event | None = None,
    ) -> None:
        self.resources = resources
        self.store = resources.store
        self.state = state
        self._save = save
        self.cancel = cancel or threading.Event()  # stop, and say cancelled
        self.pause = pause or threading.Event()  # stop, to be resumed (the process stops)
        self.originals = Originals(resources.settings.originals_dir)

    @property
    def name(self) -> str:
        return self.state.collection

    @property
    def staging(self) -> str:
        return side_name(self.name, PREVIOUS if self.state.rollback else NEXT)

    @property
    def outgoing(self) -> str:
        return side_name(self.name, NEXT if self.state.rollback else PREVIOUS)

    def run(self) -> MigrationState:
        """Build, swap and catch up; returns the final state (also saved at each stage).

        Raises:
            QuarryError: the store or the model failed (the state says where; run again).
        """
        try:
            if self.state.stage == "building":
                self._build()
            if self.state.stage == "swapped":
                self._catch_up_after_swap()
                self._set(stage="done", finished_at=_now())
        except Stopped:
            if self.cancel.is_set():
                self._set(stage="cancelled", finished_at=_now())
        except QuarryError as exc:
            self._set(error=exc.message)
            raise
        return self.state

    def _build(self) -> None:
        live = self.store.recipe(self.name)
        if live is None:
            raise NotFoundError(f"collection {self.name!r} does not exist")
        target = self._target(live)
        if same_vectors(live.vectors_key, target) and self.store.recipe(self.staging) is None:
            self._set(stage="swapped")  # a run killed right after its swap
            return
        staged = self.store.recipe(self.staging)
        if staged is not None and not same_vectors(staged.vectors_key, target):
            self.store.drop_collection(self.staging)  # an older migration's, to another model
        self.store.ensure_collection(self.staging, target)
        self._set(to=target.to_dict(), error="")
        for _ in range(MAX_PASSES):
            if not self._pass():
                break
        failpoint("migrate_before_swap")
        with self.store.holding_writes(self.name):
            self._set(swap_from=_now())
            self._pass()
            self.store.swap(self.name, self.staging, self.outgoing)
        self._set(stage="swapped")
        failpoint("migrate_after_swap")

    def _target(self, live: CollectionRecipe) -> CollectionRecipe:
        """The recipe the new collection is built with."""
        if self.state.rollback:
            kept = self.store.recipe(self.staging)
            if kept is None:
                if self.state.to:
                    return CollectionRecipe.from_dict(self.state.to)  # swapped already
                raise InvalidInputError(
                    f"collection {self.name!r} has no earlier version kept to roll back to",
                    detail={"collection": self.name},
                )
            return kept
        kit = self.resources.kits.at(self.state.model, self.state.dimension)
        return kit.recipe(live.instruction, bool(live.sparse), live.small_dim)

    def _pass(self) -> int:
        """Make the new collection hold the live one's documents; returns the changes."""
        live = {d.doc_id: d for d in self.store.documents(self.name) if d.complete}
        held = {d.doc_id for d in self.store.documents(self.staging) if d.complete}
        todo = [d for doc_id, d in live.items() if doc_id not in held]
        gone = held - live.keys()
        self._set(total=len(live), done=len(live) - len(todo))
        for doc_id in gone:
            self.store.delete_document(self.staging, doc_id)
        for start in range(0, len(todo), BATCH):
            if self.cancel.is_set() or self.pause.is_set():
                raise Stopped
            batch = todo[start : start + BATCH]
            self._copy(batch, self.name, self.staging)
            self._set(done=self.state.done + len(batch))
            failpoint("migrate_document")
        return len(todo) + len(gone)

    def _catch_up_after_swap(self) -> None:
        """Documents that reached the old collection between the last pass and the swap
        are carried over. Only where writers are other processes (a Qdrant server): the
        embedded store's writes were held. A document is stamped when its chunks were
        embedded, which may be well before they were stored: the window reaches back a
        lease (a file's longest turn) before the last pass."""
        if not self.store.writers_elsewhere or not self.state.swap_from:
            return
        if self.store.recipe(self.outgoing) is None:
            return
        margin = timedelta(seconds=max(600.0, self.resources.settings.lease_s))
        since = (datetime.fromisoformat(self.state.swap_from) - margin).isoformat(
            timespec="seconds"
        )
        newest: dict[str, tuple[int, str]] = {}  # per source, the live collection's newest
        for doc in self.store.documents(self.name):
            newest[doc.source] = max(newest.get(doc.source, (0, "")), (doc.seq, doc.ingested_at))
        late = [  # only what is newer than anything live holds for its source
            info
            for info in self.store.documents(self.outgoing)
            if info.complete
            and info.ingested_at >= since
            and (info.seq, info.ingested_at) > newest.get(info.source, (-1, ""))
        ]
        for start in range(0, len(late), BATCH):
            self._copy(late[start : start + BATCH], self.outgoing, self.name)

    def _copy(self, infos: list[DocumentInfo], source: str, dest: str) -> None:
        """Documents into `dest` with `dest`'s model: from their originals when kept (one
        pipeline run, parsed side by side), else from the chunk text `source` holds."""
        kept = {i.doc_id: self.originals.find(i.doc_id) for i in infos}
        entries = [
            FileSource(path, i.source, i.metadata, i.seq)
            for i in infos
            if (path := kept[i.doc_id]) is not None
        ]
        failed: set[str] = set()
        if entries:
            report = self.resources.pipeline(dest, optimize=False).run(entries)
            for error in report.errors + report.retrying:
                log.warning(
                    "%s: its original failed (%s); moved from its chunk text",
                    error.file,
                    error.message,
                )
                failed.add(error.file)
        for info in infos:
            if kept[info.doc_id] is None or info.source in failed:
                self._copy_text(info, source, dest)

    def _copy_text(self, info: DocumentInfo, source: str, dest: str) -> None:
        """One document's stored chunks, embedded again with `dest`'s model."""
        found = self.store.chunk_payloads(source, info.doc_id)
        if not found:
            return  # deleted meanwhile: the next pass sees it gone
        texts = [str(p.get("text", "")) for _, p in found]
        vectors = self._embedder(dest).embed_documents(texts)
        key = self.store.recipe(dest)
        records = [
            ChunkRecord(id_, vectors[i], payload, vectors=key.vectors_key if key else "")
            for i, (id_, payload) in enumerate(found)
        ]
        self.store.upsert(dest, records)
        # as the pipeline does: an older version of the source goes, a newer one stays
        self.store.prune_source(dest, info.source, info.doc_id, len(found), info.seq)

    def _embedder(self, collection: str) -> Embedder:
        kit = self.resources.kits.for_collection(collection)
        return kit.embedder if kit is not None else self.resources.embedder

    def _set(self, **changes: object) -> None:
        for key, value in changes.items():
            setattr(self.state, key, value)
        self.state.updated_at = time.time()
        self._save(self.state)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
