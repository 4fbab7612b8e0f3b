"""Migrations as jobs: started, followed, cancelled and resumed (after a kill) by the server,
or run to the end by `quarry migrate` when no server runs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from app.migration import NEXT, PREVIOUS, Migration
from app.migration_state import MigrationBusyError, MigrationState, MigrationStates
from app.resources import Resources
from embedding.default_model import PACKAGED_MODEL
from embedding.errors import InvalidInputError
from embedding.model_source import ModelSource
from retrieval.errors import NotFoundError
from retrieval.models import same_vectors, side_name
from retrieval.protocol import VectorStore

log = logging.getLogger(__name__)


OFFERS_TTL_S = 60.0


class Migrations:
    """Every collection's migration in one process: at most one run per collection."""

    def __init__(self, resources: Resources, keep_s: float) -> None:
        self.resources = resources
        self.states = MigrationStates(resources.settings.data_dir / "migrations")
        self.keep_s = keep_s  # how long the old collection is kept for a rollback
        self._lock = threading.Lock()
        # collection -> its thread, and the events that cancel it or pause it
        self._running: dict[str, tuple[threading.Thread, threading.Event, threading.Event]] = {}
        self._offers: tuple[float, list[dict[str, Any]]] | None = None

    def prepare(
        self, collection: str, model: str | None, dimension: int | None, rollback: bool
    ) -> MigrationState:
        """Check the request and record it as a new migration (nothing runs yet).

        Raises:
            NotFoundError: no such collection.
            MigrationBusyError: one is already running for it.
            InvalidInputError: no model named, no kept version to roll back to, or the
                collection already has that model.
            ModelLoadError: the model cannot be found here.
        """
        store = self.resources.store
        live = store.recipe(collection)
        if live is None:
            raise NotFoundError(f"collection {collection!r} does not exist")
        _check_aliased(store, collection)
        current = self.states.get(collection)
        if current is not None and current.active:
            asked = (current.model, current.dimension) == (model, dimension) or rollback
            if current.rollback == rollback and asked:  # asked again: the same run, resumed
                current.error = ""  # (where it was; what stopped it is tried again)
                self.states.save(current)
                return current
            raise MigrationBusyError(
                f"collection {collection!r} is already being moved to {current.model!r} "
                f"({current.stage}); cancel it first",
                detail={"collection": collection},
            )
        if rollback:
            side = side_name(collection, PREVIOUS)
            kept = store.recipe(side)
            if kept is None:
                raise InvalidInputError(
                    f"collection {collection!r} has no earlier version kept to roll back to",
                    detail={"collection": collection},
                )
            # Built with the configured model of its time: on the engine it was built with
            # (fp32 under an int8 default, say), which this process must be able to run.
            if not kept.location and self.resources.kits.for_collection(side, kept) is None:
                kept.check(self.resources.recipe(dimension=kept.dimension), collection)
            state = MigrationState(collection, kept.location or kept.model, rollback=True)
        else:
            if not model:
                raise InvalidInputError(
                    "model: name the model to move to", detail={"field": "model"}
                )
            kit = self.resources.kits.at(model, dimension)  # ModelLoadError when not here
            _check_dimension(kit.source, dimension)
            wanted = kit.recipe(live.instruction, bool(live.sparse), live.small_dim)
            if same_vectors(wanted.vectors_key, live):
                raise InvalidInputError(
                    f"collection {collection!r} is already built with {wanted.model!r} "
                    f"({wanted.dimension} dimensions)",
                    detail={"field": "model"},
                )
            state = MigrationState(collection, model, dimension)
        self.states.save(state)
        return state

    def start(self, state: MigrationState) -> None:
        """Run `state`'s migration in a thread of this process."""
        cancel, pause = threading.Event(), threading.Event()
        with self._lock:
            if state.collection in self._running:
                return
            thread = threading.Thread(
                target=self._run, args=(state, cancel, pause), name=f"migrate-{state.collection}"
            )
            self._running[state.collection] = (thread, cancel, pause)
        thread.start()

    def run_here(
        self, state: MigrationState, progress: Callable[[MigrationState], None] | None = None
    ) -> MigrationState:
        """Run to the end in this thread (the CLI without a server)."""

        def save(now: MigrationState) -> None:
            self.states.save(now)
            if progress is not None:
                progress(now)

        state.rate_from = (time.time(), state.done)
        return Migration(self.resources, state, save).run()

    def _run(self, state: MigrationState, cancel: threading.Event, pause: threading.Event) -> None:
        try:
            state.rate_from = (time.time(), state.done)
            Migration(self.resources, state, self.states.save, cancel, pause).run()
        except Exception as exc:
            log.exception("migration of %s failed: %s", state.collection, exc)
        finally:
            with self._lock:
                self._running.pop(state.collection, None)

    def status(self, collection: str) -> MigrationState:
        """The collection's latest migration (the running one's progress is live).

        Raises:
            NotFoundError: it never had one.
        """
        state = self.states.get(collection)
        if state is None:
            raise NotFoundError(f"collection {collection!r} has no migration")
        return state

    def cancel(self, collection: str) -> MigrationState:
        """Stop a running migration before its swap (the new collection stays half built:
        starting again resumes it); after the swap only a rollback undoes it."""
        state = self.status(collection)
        with self._lock:
            running = self._running.get(collection)
        if running is not None:  # the run says it is cancelled (it alone writes its state)
            running[1].set()
            running[0].join(timeout=60)
            return self.status(collection)
        state = self.status(collection)
        if state.stage == "building":  # nothing runs it here: stopped by a kill, say
            state.stage = "cancelled"
            self.states.save(state)
        return state

    def resume_all(self) -> None:
        """Take up the migrations a stopped or killed process left running."""
        for state in self.states.all():
            if state.active:
                log.info("resuming the migration of %s (%s)", state.collection, state.stage)
                self.start(state)

    def expire(self) -> None:
        """Drop the collections kept for a rollback once their window has passed."""
        for state in self.states.all():
            if state.stage != "done" or time.time() - state.updated_at < self.keep_s:
                continue
            with self._lock:
                if state.collection in self._running:  # a new one has just started
                    continue
            for role in (NEXT, PREVIOUS):
                kept = side_name(state.collection, role)
                if self.resources.store.recipe(kept) is not None:
                    log.info("dropping %s: its rollback window has passed", kept)
                    self.resources.store.drop_collection(kept)
            state.stage, state.to = "closed", {}
            self.states.save(state)

    def offers(self, model: str, location: str) -> list[dict[str, Any]]:
        """`offers`, read again at most once a minute (readiness probes come often)."""
        now = time.monotonic()
        with self._lock:
            if self._offers is not None and now - self._offers[0] < OFFERS_TTL_S:
                return self._offers[1]
        found = offers(self.resources.store, model, location)
        with self._lock:
            self._offers = (now, found)
        return found

    def close(self) -> None:
        with self._lock:
            running = list(self._running.values())
        for thread, _, pause in running:  # stopped between documents; resumed at next start
            pause.set()
            thread.join(timeout=60)


def offers(store: VectorStore, model: str, location: str) -> list[dict[str, Any]]:
    """Collections built with the packaged fallback model while `model` (found at
    `location`) is now in use: each can be moved to it (`quarry migrate`)."""
    if model == PACKAGED_MODEL:
        return []
    found = []
    for name in store.collections():
        recipe = store.recipe(name)
        if recipe is not None and recipe.model == PACKAGED_MODEL and not recipe.location:
            found.append(
                {
                    "collection": name,
                    "built_with": recipe.model,
                    "available": model,
                    "model": location,
                    "command": f"quarry migrate {name} --model {location}",
                }
            )
    return found


def _check_dimension(source: ModelSource, dimension: int | None) -> None:
    """A width asked for must be one the model has: a Matryoshka prefix of its own.

    Raises:
        InvalidInputError: naming `dim`.
    """
    if dimension is None:
        return
    width = source.native_dimension
    if not source.uses_last_token and dimension != width:
        raise InvalidInputError(
            f"dim: {source.model_id!r} is not a Matryoshka model (Qwen3-Embedding is); its "
            f"vectors cannot be cut to {dimension}",
            detail={"field": "dim"},
        )
    if width is not None and dimension > width:
        raise InvalidInputError(
            f"dim: {dimension} is wider than {source.model_id!r} ({width})",
            detail={"field": "dim"},
        )


def _check_aliased(store: VectorStore, collection: str) -> None:
    """A collection on a Qdrant server made before aliases cannot be swapped by alias: said
    before anything is built.

    Raises:
        InvalidInputError: it is one.
    """
    if not store.writers_elsewhere:
        return
    from retrieval.qdrant_store import QdrantServerStore

    if isinstance(store, QdrantServerStore) and collection not in store.layout.aliases():
        raise InvalidInputError(
            f"collection {collection!r} was made on the Qdrant server before Quarry used "
            "aliases, which a migration swaps: upload its documents into a new collection "
            "instead",
            detail={"collection": collection},
        )
