"""The model's lanes: ingest batches side by side, queries first, the same vectors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from embedding.coalescing import CoalescingEmbedder
from embedding.lanes import Lanes, cgroup_cpus, usable_cores
from embedding.model_source import resolve_model
from embedding.priority import Priority, PriorityGate
from embedding.st_embedder import SentenceTransformerEmbedder
from tests.servers import ENGINE_DIR


@pytest.mark.parametrize("priority", list(Priority))  # ingest and query batches alike
def test_calls_run_side_by_side_and_an_error_drops_those_not_started(priority: Priority) -> None:
    lanes = Lanes(2)
    together = threading.Barrier(2, timeout=10)  # broken unless two calls run at once
    running: list[int] = []
    ended: list[int] = []

    def call(n: int) -> None:
        running.append(n)
        if n < 2:
            together.wait()
        time.sleep(0.05)
        ended.append(n)
        if n == 1:
            raise ValueError("lane 1 failed")

    with pytest.raises(ValueError, match="lane 1 failed"):
        lanes.run([lambda n=n: call(n) for n in range(40)], priority)
    assert sorted(running) == sorted(ended)  # none still running once the error is back
    assert 0 in ended and len(ended) < 40  # the calls not yet started were dropped


def test_one_lane_runs_one_call_at_a_time() -> None:
    alone = threading.Barrier(2, timeout=0.5)
    with pytest.raises(threading.BrokenBarrierError):
        Lanes(1).run([alone.wait, alone.wait], Priority.BULK)


def test_a_call_from_inside_a_lane_runs_in_that_lane() -> None:
    lanes = Lanes(2)
    seen: list[str] = []

    def outer(name: str) -> None:  # both lanes held: a nested run must not wait for a third
        lanes.run([lambda: seen.append(name), lambda: seen.append(name)], Priority.BULK)

    lanes.run([lambda: outer("a"), lambda: outer("b")], Priority.BULK)
    assert sorted(seen) == ["a", "a", "b", "b"]


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


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
    _until(lambda: gate._waiting[Priority.BULK] == 1)
    query = threading.Thread(target=take, args=("query", Priority.QUERY))
    query.start()
    _until(lambda: gate._waiting[Priority.QUERY] == 1)
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


@pytest.mark.parametrize(
    ("files", "cpus"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2, a limit of 1.5 CPUs
        ({"cpu.max": "max 100000\n"}, None),  # v2, no limit
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1
        ({"cpu.max": "garbage\n"}, None),
        ({}, None),  # no cgroup filesystem (not Linux, or not mounted)
    ],
)
def test_a_containers_cpu_quota_is_read_from_its_cgroup(
    tmp_path: Path, files: dict[str, str], cpus: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpus(tmp_path) == cpus


def test_usable_cores_never_exceed_the_quota_rounded_up(tmp_path: Path) -> None:
    unlimited = usable_cores(tmp_path)  # no cgroup files here: the affinity alone
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU
    assert usable_cores(tmp_path) == 1 <= unlimited
    (tmp_path / "cpu.max").write_text(f"{100000 * (unlimited + 3)} 100000\n")
    assert usable_cores(tmp_path) == unlimited  # a quota above the cpuset changes nothing
