"""A second embedding model beside the configured one: a collection moved to another model
(a migration) is served with the model its recipe names, and one built with another engine
(fp32, int8) with that engine, in every process."""

from __future__ import annotations

from functools import cached_property

from app.settings import Settings
from embedding.cache import CachedEmbedder, VectorCache
from embedding.cpu_runtimes import choose_engine, planned_label
from embedding.model_source import ModelSource
from embedding.remote import RemoteEmbedder
from embedding.st_embedder import SentenceTransformerEmbedder, pick_device
from ingest.chunking import Chunker
from retrieval.errors import RecipeMismatchError
from retrieval.models import CollectionRecipe
from retrieval.sparse import BM25_SCHEME


def local_embedder(
    settings: Settings, source: ModelSource, dimension: int | None
) -> SentenceTransformerEmbedder:
    """A model run in this process, with the engine, batching and lanes `settings` name."""
    s = settings
    runtime, quantize = choose_engine(s.cpu_backend, s.quantize)
    return SentenceTransformerEmbedder(
        source,
        dimension=dimension,
        max_length=s.max_length,
        device=s.device,
        batch_tokens=s.batch_tokens,
        bulk_batch_tokens=s.bulk_batch_tokens,
        engine=runtime,
        engine_dir=s.engine_path,
        lanes=s.model_lanes,
        quantize=quantize,
    )


def planned_engine(settings: Settings, source: ModelSource, local: bool = False) -> str:
    """What a model of `source` records as its engine under `settings` (its recipe's
    `engine`), known without loading it: an int8 or bf16 runtime on a CPU for an encoder it
    exports; "" (fp32, torch's vectors) otherwise. Remote servers' vectors are theirs ("") unless
    the model runs `local`ly all the same (a kit's)."""
    s = settings
    if s.embedding_urls and not local:
        return ""
    runtime, quantize = choose_engine(s.cpu_backend, s.quantize)
    return planned_label(runtime, quantize, source.model_type, pick_device(s.device))


def settings_for_engine(settings: Settings, engine: str) -> Settings:
    """`settings` running a local model so that its vectors are `engine`'s (a recipe's)."""
    if not engine:
        return settings.model_copy(update={"quantize": "none"})
    runtime, _, quantize = engine.partition("-")
    return settings.model_copy(update={"cpu_backend": runtime, "quantize": quantize})


def chunker_for(settings: Settings, base: SentenceTransformerEmbedder | RemoteEmbedder) -> Chunker:
    """Chunks in the model's own tokens, no longer than it reads."""
    size = min(settings.chunk_tokens, base.max_tokens - base.special_tokens())
    overlap = min(settings.chunk_overlap, size // 2)
    return Chunker(base.tokenizer, size, overlap)


class ModelKit:
    """One model's parts: where it is found, its embedder (through the shared cache), its
    chunker and the recipe of the collections it builds."""

    def __init__(
        self,
        settings: Settings,
        location: str,
        source: ModelSource,
        dimension: int | None,
        cache: VectorCache,
        base: SentenceTransformerEmbedder | RemoteEmbedder | None = None,
    ) -> None:
        self.settings = settings
        self._base = base  # the configured model's, when this is that model
        self.location = location
        self.wanted_dimension = dimension
        self.cache = cache
        self.source = source  # (found by `resolve_model`: a hub id at a revision, a folder)

    @property
    def is_configured(self) -> bool:
        """This is the model the process is configured with (its parts are shared)."""
        return self._base is not None

    @cached_property
    def base_embedder(self) -> SentenceTransformerEmbedder | RemoteEmbedder:
        if self._base is not None:
            return self._base
        return local_embedder(self.settings, self.source, self.wanted_dimension)

    @cached_property
    def embedder(self) -> CachedEmbedder:
        return CachedEmbedder(self.base_embedder, self.cache)

    @cached_property
    def chunker(self) -> Chunker:
        """One chunker for every file and thread (they share the model's token counter)."""
        return chunker_for(self.settings, self.base_embedder)

    def recipe(self, instruction: str, sparse: bool, small_dim: int = 0) -> CollectionRecipe:
        """The recipe of a collection built with this model (loads it for its width)."""
        base = self.base_embedder
        dimension = base.dimension
        keeps_small = self.source.uses_last_token and 32 <= small_dim < dimension
        return CollectionRecipe(
            model=self.source.model_id,
            dimension=dimension,
            instruction=instruction or self.settings.query_instruction,
            revision=self.source.revision,
            normalize=True,
            max_length=base.max_tokens,
            sparse=BM25_SCHEME if sparse else "",
            small_dim=small_dim if keeps_small else 0,
            location=self.location,
            engine=base.recipe.engine,
        )

    def check(self, stored: CollectionRecipe, collection: str) -> None:
        """Refuse a model found at the recipe's location that is no longer the same model.

        Raises:
            RecipeMismatchError: its files changed (another revision) since the collection
                was built.
        """
        if stored.revision and self.source.revision != stored.revision:
            raise RecipeMismatchError(
                f"collection {collection!r} was built with {stored.model!r} at "
                f"{stored.location!r}, revision {stored.revision!r}; the model found there "
                f"now is revision {self.source.revision!r}. Put that revision back, or "
                "migrate the collection again (quarry migrate).",
                detail={"collection": collection, "stored": stored.to_dict()},
            )


def engine_unavailable(engine: str, runs: str, model: str) -> RecipeMismatchError:
    """A collection built with an engine this process cannot run (int8 on a GPU, a runtime
    not installed here): its vectors would be another kind."""
    return RecipeMismatchError(
        f"the collection's vectors were made by {model!r} on {engine or 'fp32'}, which this "
        f"process cannot run (here it would run {runs or 'fp32'}: int8 needs a CPU and "
        "QUARRY_CPU_BACKEND=onnx or openvino with that runtime installed). Search and write "
        "it from such a process, or move it here with quarry migrate.",
        detail={"engine": engine, "here": runs or "fp32", "model": model},
    )
