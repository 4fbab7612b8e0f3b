"""The embedded store never closes a shard under a running search (rebuilds, drops)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from retrieval.edge_store import EdgeStore
from retrieval.models import ChunkRecord, CollectionRecipe, SearchPlan, chunk_id
from retrieval.sparse import BM25_SCHEME, Bm25Encoder, SparseVec


def test_searches_run_on_through_a_sparse_rebuild(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path)
    store.ensure_collection("c", CollectionRecipe("m", 8, "i"))
    rng = np.random.default_rng(3)
    texts = [f"passage {i} about owls and voles number {i}" for i in range(3000)]
    texts[17] = "a grey heron stands still among the reeds"
    store.upsert(
        "c",
        [
            ChunkRecord(
                chunk_id(f"d{i}", 0),
                rng.standard_normal(8).astype(np.float32),
                {"doc_id": f"d{i}", "text": t},
            )
            for i, t in enumerate(texts)
        ],
    )
    query = rng.standard_normal((1, 8)).astype(np.float32)
    errors: list[BaseException] = []
    answered = [0]
    stop = threading.Event()

    def search_forever() -> None:
        while not stop.is_set():
            try:
                hits = store.search("c", query, 5, plan=SearchPlan("dense"))
                assert len(hits[0]) == 5
                answered[0] += 1
            except BaseException as exc:
                errors.append(exc)
                return

    readers = [threading.Thread(target=search_forever) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        assert store.add_sparse("c", BM25_SCHEME, Bm25Encoder().documents) == 3000
    finally:
        stop.set()
        for reader in readers:
            reader.join(30)
    assert not errors, errors[0]
    assert answered[0] > 0
    sparse = store.search(
        "c",
        None,
        3,
        sparse=Bm25Encoder().queries(["heron in the reeds"]),
        plan=SearchPlan("sparse"),
    )
    assert sparse[0][0].doc_id == "d17"
    store.close()


def _chunk(i: int) -> ChunkRecord:
    vector = np.random.default_rng(i).standard_normal(8).astype(np.float32)
    return ChunkRecord(chunk_id(f"d{i}", 0), vector, {"doc_id": f"d{i}", "text": f"owl {i}"})


def test_a_write_during_the_swap_of_a_rebuilt_shard_reaches_the_new_one(tmp_path: Path) -> None:
    """A writer arriving while the rebuilt shard is swapped in waits for it: its points are
    in the collection afterwards, never written to the old shard and lost."""
    store = EdgeStore(tmp_path)
    store.ensure_collection("c", CollectionRecipe("m", 8, "i"))
    store.upsert("c", [_chunk(i) for i in range(50)])
    encoded = threading.Event()
    encoder = Bm25Encoder()

    def encode(texts: list[str]) -> list[SparseVec]:
        encoded.set()
        return encoder.documents(texts)

    rebuild = threading.Thread(target=store.add_sparse, args=("c", BM25_SCHEME, encode))
    with store._reading("c"):  # a read keeps the old shard busy: the swap waits for it
        rebuild.start()
        assert encoded.wait(10)
        time.sleep(0.3)  # the copy is done; the swap waits for this read
        writer = threading.Thread(target=store.upsert, args=("c", [_chunk(99)]))
        writer.start()
        time.sleep(0.3)
    rebuild.join(30)
    writer.join(30)
    assert store.count("c") == 51 and store.recipe("c").sparse == BM25_SCHEME  # type: ignore[union-attr]
    store.close()
