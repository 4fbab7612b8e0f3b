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

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tokens:
    """One text's tokens: their ids and each one's (start, end) in the text."""

    ids: list[int]
    offsets: list[tuple[int, int]]


class SharedTokenizer:
    """Encodes texts for any number of threads at once, as `template` would untruncated."""

    def __init__(self, template: Any) -> None:
        self.template = template
        self.special = int(template.num_special_tokens_to_add(pair=False))
        backend = getattr(template, "backend_tokenizer", None)
        self._backend: Any = None
        self._lock = threading.Lock()  # only for a slow (Python) tokenizer
        if backend is not None:
            from tokenizers import Tokenizer

            self._backend = Tokenizer.from_str(backend.to_str())
            self._backend.no_truncation()
            self._backend.no_padding()

    def encode(self, texts: Sequence[str], special: bool = False) -> list[Tokens]:
        """Each text's tokens, the model's special tokens added when `special`."""
        if not texts:
            return []
        if self._backend is not None:
            found = self._backend.encode_batch(list(texts), add_special_tokens=special)
            return [Tokens(e.ids, e.offsets) for e in found]
        with self._lock:  # slow tokenizers give no offsets: only counts are asked of them
            ids = self.template(list(texts), add_special_tokens=special, verbose=False)
        return [Tokens(row, []) for row in ids["input_ids"]]

    def counts(self, texts: Sequence[str], special: bool = False) -> list[int]:
        return [len(tokens.ids) for tokens in self.encode(texts, special)]
