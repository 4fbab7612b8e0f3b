"""One fast tokenizer per thread: a call mutates the tokenizer's truncation/padding state."""

from __future__ import annotations

import copy
import threading
from typing import Any


class PerThreadTokenizer:
    """Hands each thread its own copy of a Hugging Face fast tokenizer.

    `tokenizer(..., truncation=True, max_length=n)` reconfigures the Rust backend it runs
    on, so two threads sharing one instance corrupt each other's batches ("Unable to create
    tensor", ragged rows). A copy costs a few MB and is made once per thread.
    """

    def __init__(self, template: Any) -> None:
        self._template = template
        self._local = threading.local()
        self._lock = threading.Lock()

    def get(self) -> Any:
        own = getattr(self._local, "tokenizer", None)
        if own is None:
            with self._lock:  # deepcopy reads the template; nobody else may use it meanwhile
                own = copy.deepcopy(self._template)
            self._local.tokenizer = own
        return own

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.get()(*args, **kwargs)
