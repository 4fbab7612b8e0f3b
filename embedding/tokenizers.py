"""One fast tokenizer that every thread may call at once, for token counts and offsets.

A transformers call (`tokenizer(..., truncation=True, max_length=n)`) reconfigures the Rust
backend it runs on, so threads sharing one instance corrupt each other's batches ("Unable to
create tensor", ragged rows). Each thread used to get a deep copy of the whole tokenizer:
56 ms for MiniLM's and 1.3 s for Qwen's, paid by every ingest slot and parse thread, and
the largest single cost of a served upload's files after the model itself. This keeps one
clone of the backend with truncation and padding off, which nothing ever reconfigures: its
encodes only read it (and release the GIL), so threads run them side by side. Its ids and
offsets are those of the transformers call (a test holds them equal); what truncation
would give is taken from them (`ids[:n]`, `offsets[:n]`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from embedding.errors import ModelLoadError


@dataclass(frozen=True)
class Tokens:
    """One text's tokens: their ids and each one's (start, end) in the text."""

    ids: list[int]
    offsets: list[tuple[int, int]]


class SharedTokenizer:
    """Encodes texts for any number of threads at once, as `template` would untruncated."""

    def __init__(self, template: Any) -> None:
        """A clone of `template`'s backend.

        Raises:
            ModelLoadError: `template` is a slow (Python) tokenizer, which gives no offsets.
        """
        backend = getattr(template, "backend_tokenizer", None)
        if backend is None:
            raise ModelLoadError(
                f"{type(template).__name__} is a slow tokenizer: chunking needs a fast "
                "(Rust) one for token offsets"
            )
        from tokenizers import Tokenizer

        self.special = int(template.num_special_tokens_to_add(pair=False))
        self._backend = Tokenizer.from_str(backend.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()

    def encode(self, texts: Sequence[str], special: bool = False) -> list[Tokens]:
        """Each text's tokens, the model's special tokens added when `special`."""
        if not texts:
            return []
        found = self._backend.encode_batch(list(texts), add_special_tokens=special)
        return [Tokens(e.ids, e.offsets) for e in found]

    def counts(self, texts: Sequence[str], special: bool = False) -> list[int]:
        return [len(tokens.ids) for tokens in self.encode(texts, special)]
