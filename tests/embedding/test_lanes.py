"""The model's lanes: ingest batches side by side, queries first, the same vectors."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from embedding.coalescing import CoalescingEmbedder
from embedding.lanes import Lanes
from embedding.model_source import resolve_model
from embedding.priority import Priority, PriorityGate
from embedding.st_embedder import SentenceTransformerEmbedder
from tests.servers import ENGINE_DIR


def test_ingest_calls_run_side_by_side_and_errors_surface_after_all_ended() -> None:
    lanes = Lanes(2)
    together = threading.Barrier(2, timeout=10)  # broken unless two calls run at once
    ended: list[int] = []

    def call(n: int) -> None:
        together.wait()
        time.sleep(0.05)
        ended.append(n)
        if n == 1:
            raise ValueError("lane 1 failed")

    with pytest.raises(ValueError, match="lane 1 failed"):
        lanes.run([lambda n=n: call(n) for n in range(4)], Priority.BULK)
    assert sorted(ended) == [0, 1, 2, 3]  # none was still running when the error came back
    one = Lanes(1)
    alone = threading.Barrier(2, timeout=0.5)
    with pytest.raises(threading.BrokenBarrierError):  # one lane: one call at a time
        one.run([alone.wait, alone.wait], Priority.BULK)


def test_a_waiting_query_takes_the_next_free_lane_before_waiting_ingest() -> None:
    gate = PriorityGate(2)
    order: list[str] = []
    release = threading.Event()
    holding = threading.Barrier(3, timeout=10)

    def hold() -> None:
        with gate.turn(Priority.BULK):
            holding.wait()
            release.wait(10)

    def take(name: str, priority: Priority) -> None:
        with gate.turn(priority):
            order.append(name)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for thread in holders:
        thread.start()
    holding.wait()  # both lanes are held
    bulk = threading.Thread(target=take, args=("bulk", Priority.BULK))
    bulk.start()
    time.sleep(0.1)
    query = threading.Thread(target=take, args=("query", Priority.QUERY))
    query.start()
    time.sleep(0.1)
    assert order == []  # a third holder waits for a free lane
    release.set()
    for thread in [*holders, bulk, query]:
        thread.join(10)
    assert order == ["query", "bulk"]


class FakeLanedEmbedder:
    """Stands in for a model with two lanes, recording how many calls overlap."""

    lanes = 2
    dimension = 3

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self._lock:
            self.running -= 1
        return np.array([[len(t), 0.0, 1.0] for t in texts], dtype=np.float32)


def test_the_coalescer_keeps_every_lane_fed() -> None:
    inner = FakeLanedEmbedder()
    coalescer = CoalescingEmbedder(lambda: inner, max_items=1)  # type: ignore[arg-type,return-value]
    results: dict[int, np.ndarray] = {}

    def embed(n: int) -> None:
        results[n] = coalescer.embed_documents(["x" * n])

    threads = [threading.Thread(target=embed, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    coalescer.close()
    assert inner.most == 2  # two calls in the model at once, never more
    assert all(results[n][0][0] == n for n in range(1, 9))  # each caller got its own rows


def test_onnx_lanes_give_the_single_lane_vectors(minilm_path: str) -> None:
    source = resolve_model(minilm_path)
    line = "on roasting, brewing and the chemistry of coffee "
    texts = [f"passage {i} " + line * (1 + i % 9) for i in range(40)]
    laned = SentenceTransformerEmbedder(
        source, engine="onnx", engine_dir=Path(ENGINE_DIR), lanes=2, bulk_batch_tokens=256
    )
    assert laned.lanes == 2
    single = SentenceTransformerEmbedder(source, bulk_batch_tokens=256)  # torch, one lane
    assert single.lanes == 1
    got = laned.embed_documents(texts)
    np.testing.assert_allclose(got, single.embed_documents(texts), atol=1e-5)
    assert laned.stats.batches > 2 and laned.stats.texts == len(texts)
    queries = laned.embed_queries(["coffee chemistry"], None)
    np.testing.assert_allclose(queries, single.embed_queries(["coffee chemistry"], None), atol=1e-5)
