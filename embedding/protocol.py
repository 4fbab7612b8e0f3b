"""The `Embedder` protocol and the recipe that identifies what a vector means."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class EmbeddingRecipe:
    """Everything that changes a vector, known without loading the model's weights."""

    model: str
    revision: str
    dimension: int | None  # None = the model's full size
    normalize: bool
    max_length: int
    takes_instruction: bool
    engine: str = ""  # what changes the vectors besides the model (int8); "" = nothing

    def fingerprint(self) -> str:
        fields = asdict(self)
        if not self.engine:  # the keys of vectors cached before engines were recorded
            del fields["engine"]
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors; queries and documents differ."""

    @property
    def recipe(self) -> EmbeddingRecipe: ...

    @property
    def dimension(self) -> int:
        """Output size (loads the model's config if needed, never its weights twice)."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_queries(self, texts: Sequence[str], instruction: str | None) -> np.ndarray: ...
