"""What a model reads, known from its files without weights: tokenizer, limits, recipe.

Shared by the in-process backend and the remote one, so both count, cut and name inputs
the same way and their vectors share collections and cache entries.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from embedding.errors import ModelLoadError
from embedding.instructions import format_query
from embedding.model_source import ModelSource
from embedding.protocol import EmbeddingRecipe
from embedding.tokenizers import SharedTokenizer

# Qwen3-Embedding's own tokenizer appends this to every input; last-token pooling reads it.
QWEN_EOS = "<|endoftext|>"


def ensure_trailing_eos(tokenizer: Any) -> None:
    """Make a Qwen tokenizer append `<|endoftext|>` if its files do not already do so."""
    from tokenizers import processors

    eos_id = tokenizer.convert_tokens_to_ids(QWEN_EOS)
    if tokenizer("a")["input_ids"][-1:] == [eos_id]:
        return
    backend = tokenizer.backend_tokenizer
    template = processors.TemplateProcessing(
        single=f"$A:0 {QWEN_EOS}:0",
        pair=f"$A:0 {QWEN_EOS}:0 $B:1 {QWEN_EOS}:1",
        special_tokens=[(QWEN_EOS, eos_id)],
    )
    current = backend.post_processor
    backend.post_processor = (
        processors.Sequence([current, template]) if current is not None else template
    )
    if tokenizer("a")["input_ids"][-1:] != [eos_id]:
        raise ModelLoadError("could not make the Qwen tokenizer append <|endoftext|>")


@dataclass
class ModelStats:
    """Work done by the model since start: what /metrics reports."""

    batches: int = 0
    texts: int = 0
    tokens: int = 0
    seconds: float = 0.0


class ModelInputs:
    """The tokenizer side of an embedding model: recipe, input limit, token counts."""

    def __init__(self, source: ModelSource, *, dimension: int | None, max_length: int) -> None:
        self.source = source
        self._requested_dim = dimension
        self._max_length_cap = max_length
        self._tokenizer_lock = threading.Lock()
        self._tokenizer: SharedTokenizer | None = None
        if dimension is not None and source.uses_last_token and not 32 <= dimension <= 1 << 16:
            raise ModelLoadError(f"QUARRY_EMBEDDING_DIM={dimension} is outside 32..65536")

    @property
    def recipe(self) -> EmbeddingRecipe:
        return EmbeddingRecipe(
            model=self.source.model_id,
            revision=self.source.revision,
            dimension=self._requested_dim,
            normalize=True,
            max_length=self._max_length_cap,
            takes_instruction=self.source.uses_last_token,
            engine=self.vectors_engine,
        )

    @property
    def vectors_engine(self) -> str:
        """What the engine changes in the vectors ("" : nothing, torch's fp32 vectors)."""
        return ""

    @property
    def max_tokens(self) -> int:
        """Longest input the model sees, special tokens included."""
        own = self.source.max_seq_length or self._max_length_cap
        return min(own, self._max_length_cap)

    @property
    def tokenizer(self) -> SharedTokenizer:
        """The tokenizer (no weights) for counting tokens, shared by every thread.

        Never the model's own instance, which only the model thread touches: a fast
        tokenizer's call reconfigures it.
        """
        with self._tokenizer_lock:
            if self._tokenizer is None:
                self._tokenizer = SharedTokenizer(self.load_tokenizer())
        return self._tokenizer

    def load_tokenizer(self) -> Any:
        """A new tokenizer instance of this model, for a caller to own."""
        from transformers import AutoTokenizer

        kwargs: dict[str, Any] = {"padding_side": "left"} if self.source.uses_last_token else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(self.source.path), **kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the tokenizer of {self.source.model_id!r}: {exc}"
            ) from exc
        if self.source.uses_last_token:
            ensure_trailing_eos(tokenizer)
        return tokenizer

    def special_tokens(self) -> int:
        """Tokens the tokenizer adds around a text (CLS/SEP, or Qwen's trailing EOS)."""
        return self.tokenizer.special

    def as_queries(self, texts: Sequence[str], instruction: str | None) -> list[str]:
        """Queries as the model reads them: instructed only when the model was trained so."""
        if not self.source.uses_last_token:
            instruction = None
        return [format_query(instruction, text) for text in texts]

    def token_counts(self, texts: Sequence[str], instruction: str | None = None) -> list[int]:
        """Tokens the model reads for each text (as queries when `instruction` is given)."""
        if instruction is not None:
            texts = self.as_queries(texts, instruction)
        return [min(n, self.max_tokens) for n in self.tokenizer.counts(texts, special=True)]
