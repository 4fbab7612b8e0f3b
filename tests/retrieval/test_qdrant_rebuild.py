"""A rebuild on a Qdrant server (qdrant-client's local mode; a real server with QDRANT_URL)
fills a new generation beside the live collection and swaps an alias: searches never fail,
writes made meanwhile (by this process or another) are all there after the swap, and a run
killed mid-way resumes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from retrieval.models import ChunkRecord, CollectionRecipe, SearchPlan, chunk_id
from retrieval.qdrant_rebuild import is_internal
from retrieval.qdrant_store import _RECIPE_KEY, QdrantServerStore
from retrieval.sparse import BM25_SCHEME, Bm25Encoder, SparseVec

RECIPE = CollectionRecipe(model="m", dimension=8, instruction="i", revision="r", max_length=512)


def _vec(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _doc(i: int, text: str | None = None) -> ChunkRecord:
    payload = {"doc_id": f"d{i:04d}", "source": f"s{i}", "chunk_index": 0, "chunk_count": 1}
    payload |= {"text": text or f"note {i} about owls", "ingested_at": f"t{i}"}
    return ChunkRecord(chunk_id(f"d{i:04d}", 0), _vec(i), payload)


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[QdrantClient]:
    made = (
        QdrantClient(url=os.environ["QDRANT_URL"])
        if os.environ.get("QDRANT_URL")
        else QdrantClient(path=str(tmp_path / "local"))
    )
    yield made
    made.close()


def _legacy(client: QdrantClient, name: str) -> None:
    """A collection as Quarry made them before aliases: a physical one, by its own name."""
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE),
        metadata={_RECIPE_KEY: RECIPE.to_dict()},
    )


@pytest.mark.parametrize("legacy", [True, False])
def test_a_rebuild_loses_no_write_and_never_drops_the_live_collection(
    client: QdrantClient, legacy: bool
) -> None:
    ours, theirs = QdrantServerStore(client), QdrantServerStore(client)  # two processes
    if legacy:
        _legacy(client, "docs")
    else:
        ours.ensure_collection("docs", RECIPE)
        assert "docs" in {a.alias_name for a in client.get_aliases().aliases}
    ours.upsert("docs", [_doc(i) for i in range(700)])
    theirs.upsert("docs", [_doc(700)])  # it looks now: it sees no rebuild for 2 s
    calls = [0]

    def encode_and_meddle(texts: list[str]) -> list[SparseVec]:
        calls[0] += 1
        if calls[0] == 1:  # mid-copy: the other process writes, unaware, and deletes
            theirs.upsert("docs", [_doc(701, "a heron among reeds")])
            theirs.delete_document("docs", "d0003")
            ours.upsert("docs", [_doc(702)])  # this one knows: it writes to both
        hits = ours.search("docs", _vec(5)[None, :], 1, plan=SearchPlan("dense"))
        assert hits[0] and hits[0][0].doc_id == "d0005"  # searches go on
        if calls[0] == 2 and not killed:
            raise KeyboardInterrupt("killed mid-copy")
        return Bm25Encoder().documents(texts)

    killed = False
    with pytest.raises(KeyboardInterrupt):
        ours.add_sparse("docs", BM25_SCHEME, encode_and_meddle)
    killed = True
    stored = ours.recipe("docs")
    assert stored is not None and not stored.sparse  # still the live, untouched one
    assert ours.count("docs") == 702
    assert ours.add_sparse("docs", BM25_SCHEME, encode_and_meddle) == 702  # resumed
    upgraded = ours.recipe("docs")
    assert upgraded is not None and upgraded.sparse == BM25_SCHEME
    assert ours.count("docs") == 702 and ours.document("docs", "d0003") is None
    assert ours.document("docs", "d0701") is not None and ours.document("docs", "d0702")
    found = ours.search(
        "docs", None, 1, sparse=Bm25Encoder().queries(["heron reeds"]), plan=SearchPlan("sparse")
    )
    assert found[0][0].doc_id == "d0701"
    assert ours.collections() == ["docs"]
    names = {c.name for c in client.get_collections().collections}
    assert len(names) == 1 and all(is_internal(n) for n in names)  # the old one is gone
    assert ours.add_sparse("docs", BM25_SCHEME, encode_and_meddle) == 0


def test_a_dropped_collection_takes_its_generations_with_it(client: QdrantClient) -> None:
    store = QdrantServerStore(client)
    store.ensure_collection("gone", RECIPE)
    store.upsert("gone", [_doc(1)])
    store.drop_collection("gone")
    assert store.recipe("gone") is None and store.collections() == []
    leftover: list[Any] = client.get_collections().collections
    assert leftover == []
