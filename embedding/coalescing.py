"""Many files' chunks in one model batch: ingestion's side of dynamic batching.

Each file in flight embeds its own few chunks (a short file has one or two). Run alone, a
call of two texts keeps the model a fraction as busy as a call of sixty-four, so concurrent
`embed_documents` calls from the files' threads are merged here: one thread takes what is
waiting (whole calls, up to `max_items` texts, waiting at most `max_wait_s` for more when
there is little), runs one model call, and hands every caller its rows. A model that runs
several calls at once (`lanes`: one per core on a CPU, `embedding/lanes.py`) gets as many
such threads, so a lane never idles while one thread waits for its call to end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from embedding.lanes import lanes_of
from embedding.protocol import Embedder, EmbeddingRecipe


@dataclass
class _Call:
    texts: Sequence[str]
    future: Future[np.ndarray] = field(default_factory=Future)


class CoalescingEmbedder:
    """An `Embedder` whose document calls from many threads share model batches."""

    def __init__(
        self, inner: Callable[[], Embedder], max_items: int = 64, max_wait_s: float = 0.01
    ) -> None:
        self._inner = inner  # built on first use (the model may still be loading)
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        self._waiting: list[_Call] = []
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.batches = 0

    @property
    def inner(self) -> Embedder:
        return self._inner()

    @property
    def recipe(self) -> EmbeddingRecipe:
        return self.inner.recipe

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed_queries(self, texts: Sequence[str], instruction: str | None) -> np.ndarray:
        return self.inner.embed_queries(texts, instruction)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return self.inner.embed_documents(texts)
        call = _Call(texts)
        lanes = 1 if self._threads else lanes_of(self.inner)  # loads a local model
        with self._cond:
            if self._closed:
                raise RuntimeError("the embedder is closed")
            self._waiting.append(call)
            while len(self._threads) < lanes:
                thread = threading.Thread(
                    target=self._loop, name=f"embed-coalescer-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            self._cond.notify_all()
        return call.future.result()

    def _take(self) -> list[_Call] | None:
        """Whole calls, up to `max_items` texts, after a short wait for company."""
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed and not self._waiting:
                return None
            deadline = time.monotonic() + self.max_wait_s
            while sum(len(c.texts) for c in self._waiting) < self.max_items:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            taken: list[_Call] = []
            count = 0
            while self._waiting and (
                not taken or count + len(self._waiting[0].texts) <= self.max_items
            ):
                call = self._waiting.pop(0)
                taken.append(call)
                count += len(call.texts)
            return taken

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            texts = [text for call in taken for text in call.texts]
            try:
                vectors = self.inner.embed_documents(texts)
            except BaseException as exc:  # each caller gets the model's error
                for call in taken:
                    call.future.set_exception(exc)
                continue
            with self._cond:
                self.batches += 1
            start = 0
            for call in taken:
                call.future.set_result(vectors[start : start + len(call.texts)])
                start += len(call.texts)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
