"""Every model this process serves collections with: the configured one, a model a
collection was moved to (a migration), and the configured model on the engine a collection
was built with (fp32 or int8). One kit per model, width and engine, however it was named."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from app.model_kit import ModelKit, engine_unavailable, planned_engine, settings_for_engine
from embedding.model_source import is_packaged, resolve_model
from retrieval.models import CollectionRecipe

if TYPE_CHECKING:
    from app.resources import Resources


class ModelKits:
    """The kits of one process's `Resources`, made on first use and kept."""

    def __init__(self, resources: Resources) -> None:
        self._res = resources
        self._lock = threading.Lock()
        # asked (location, revision, width, engine), and found (model id, revision, width,
        # engine)
        self._kits: dict[tuple[str, str, int | None, str | None], ModelKit] = {}

    def at(
        self, location: str, dimension: int | None, revision: str = "", engine: str | None = None
    ) -> ModelKit:
        """The model found at `location` (a hub id or a folder; a hub id at `revision`),
        `dimension` wide (None: its own width), run so that its vectors are `engine`'s (a
        recipe's; None: as configured): the configured model's parts when it is that model,
        run that way. One kit per model, width and engine, however they were named.

        Raises:
            ModelLoadError: no such model here.
        """
        asked = (location, revision, dimension, engine)
        with self._lock:
            known = self._kits.get(asked)
        if known is not None:
            return known
        source = resolve_model(location, revision or None)  # a folder: by its contents
        settings = self._res.settings
        if engine is not None and engine != planned_engine(settings, source, local=True):
            settings = settings_for_engine(settings, engine)
        runs = planned_engine(settings, source, local=True)
        if engine is not None and runs != engine:
            raise engine_unavailable(engine, runs, source.model_id)
        same = (source.model_id, source.revision, dimension or source.native_dimension, runs)
        mine = self._res.model_source
        own_width = self._res.settings.embedding_dim or mine.native_dimension
        configured = (mine.model_id, mine.revision, own_width, self._res.configured_engine)
        base = self._res.base_embedder if same == configured else None
        kit = ModelKit(settings, location, source, dimension, self._res.cache, base)
        with self._lock:
            kit = self._kits.setdefault(same, kit)
            return self._kits.setdefault(asked, kit)

    def for_collection(
        self, collection: str, stored: CollectionRecipe | None = None
    ) -> ModelKit | None:
        """The model a collection moved to another model is served with (None: the
        configured one, whose recipe the collection must match).

        Raises:
            RecipeMismatchError: the model at the recipe's location changed since.
        """
        stored = stored or self._res.ingest_store.recipe(collection)
        if stored is None:
            return None
        if not stored.location:  # the configured model, run as the collection was built
            if self._res.remote or stored.engine == self._res.configured_engine:
                return None
            return self._engine_kit(stored) if self._is_configured_model(stored) else None
        where = stored.location  # a hub id at its revision; a folder or package by contents
        local = Path(where).expanduser().is_dir() or is_packaged(where)
        revision = "" if local else stored.revision
        kit = self.at(where, stored.dimension, revision, stored.engine)
        kit.check(stored, collection)
        return kit

    def _is_configured_model(self, stored: CollectionRecipe) -> bool:
        """`stored` names the configured model, at its width (but perhaps another engine):
        anything else is refused by the recipe check, not served."""
        mine = self._res.model_source
        width = self._res.settings.embedding_dim or mine.native_dimension
        return (
            stored.model == mine.model_id
            and stored.revision in ("", mine.revision)
            and stored.dimension == width
        )

    def _engine_kit(self, stored: CollectionRecipe) -> ModelKit:
        """The configured model run with the engine a collection was built with (fp32 for
        a collection from before QUARRY_QUANTIZE, or int8 for one built with it)."""
        asked = ("", self._res.model_source.revision, stored.dimension, stored.engine)
        with self._lock:
            known = self._kits.get(asked)
            if known is None:
                settings = settings_for_engine(self._res.settings, stored.engine)
                runs = planned_engine(settings, self._res.model_source, local=True)
                if runs != stored.engine:
                    raise engine_unavailable(stored.engine, runs, self._res.model_source.model_id)
                known = ModelKit(
                    settings, "", self._res.model_source, stored.dimension, self._res.cache
                )
                self._kits[asked] = known
            return known
