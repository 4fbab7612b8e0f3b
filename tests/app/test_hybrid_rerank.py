"""Search modes, the BM25 backfill and reranking through the real app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from embedding.random_qwen import build_random_qwen3_reranker
from embedding.rerankers import Qwen3Reranker, RemoteReranker

from ..servers import embedding_nodes
from .conftest import files, start_client, wait_for_job

DOCS = {
    "owls.txt": "Owls hunt mice at night using silent flight and sharp hearing.",
    "coffee.txt": "Espresso is brewed by forcing hot water through finely ground coffee.",
    "cheese.txt": "Mice eat cheese in the kitchen while the cat sleeps.",
    "tides.txt": "The moon's gravity pulls the oceans into tides twice a day.",
}


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_qwen3_reranker(tmp_path_factory.mktemp("rr") / "tiny-reranker")


def ingest(api: TestClient) -> None:
    upload = [(name, text.encode()) for name, text in DOCS.items()]
    job = api.post("/v1/documents", files=files(*upload)).json()
    assert wait_for_job(api, job["job_id"])["state"] == "done"


def search(api: TestClient, **body: object) -> dict:  # type: ignore[type-arg]
    response = api.post("/v1/search", json={"top_k": 4} | body)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture()
def client(settings: Settings, tiny_reranker: Path) -> Iterator[TestClient]:
    api = start_client(settings.model_copy(update={"rerank_model": str(tiny_reranker)}))
    ingest(api)
    yield api
    api.__exit__(None, None, None)


def test_the_modes_search_differently_and_hybrid_is_the_default(client: TestClient) -> None:
    default = search(client, query="where do mice hunt at night")
    assert default["mode"] == "hybrid"
    assert {"embed_ms", "sparse_encode_ms", "search_ms"} <= set(default["timings_ms"])
    profiled = search(client, query="where do mice hunt at night", profile=True)
    stages = {"prefetch_dense_ms", "prefetch_sparse_ms", "fusion_ms"}
    assert stages <= set(profiled["timings_ms"]) and not stages & set(default["timings_ms"])
    assert [h["chunk_id"] for h in profiled["hits"]] == [h["chunk_id"] for h in default["hits"]]
    sparse = search(client, query="hunting mice", mode="sparse")
    assert sparse["mode"] == "sparse" and "embed_ms" not in sparse["timings_ms"]
    assert {h["source"] for h in sparse["hits"]} == {"owls.txt", "cheese.txt"}  # words only
    assert search(client, query="the of and", mode="sparse")["hits"] == []
    dense = search(client, query="the of and", mode="dense")
    assert len(dense["hits"]) == 4 and "sparse_encode_ms" not in dense["timings_ms"]
    weighted = search(client, query="hunting mice", weights=[1.0, 4.0], rrf_k=10)
    assert weighted["hits"][0]["source"] in ("owls.txt", "cheese.txt")
    for bad in ({"mode": "fuzzy"}, {"weights": [1.0, 0.0]}, {"rrf_k": 0}):
        assert client.post("/v1/search", json={"query": "x"} | bad).status_code == 422


def test_an_older_collection_is_dense_until_backfilled(settings: Settings) -> None:
    api = start_client(settings.model_copy(update={"sparse_vectors": False}))
    try:
        ingest(api)
        assert search(api, query="owls")["mode"] == "dense"
        refused = api.post("/v1/search", json={"query": "owls", "mode": "hybrid"})
        assert refused.status_code == 422 and "backfill" in refused.json()["error"]["message"]
        done = api.post("/v1/collections/test/sparse").json()
        assert done == {"collection": "test", "chunks_updated": len(DOCS)}
        assert api.post("/v1/collections/test/sparse").json()["chunks_updated"] == 0
        hybrid = search(api, query="hunting owls")
        assert hybrid["mode"] == "hybrid" and hybrid["hits"][0]["source"] == "owls.txt"
        missing = api.post("/v1/collections/nothing-here/sparse")
        assert missing.status_code == 404
    finally:
        api.__exit__(None, None, None)


def test_rerank_reorders_the_candidates_by_the_rerankers_scores(
    client: TestClient, tiny_reranker: Path
) -> None:
    query = "what do owls eat"
    plain = search(client, query=query)
    reranked = search(client, query=query, rerank=True, rerank_top_n=4)
    assert "rerank_ms" in reranked["timings_ms"]
    texts = [h["text"] for h in reranked["hits"]]
    assert sorted(texts) == sorted(h["text"] for h in plain["hits"])  # same candidates
    instruction = reranked["instruction"]
    expected = Qwen3Reranker(tiny_reranker, device="cpu").rerank(query, texts, instruction)
    np.testing.assert_allclose([h["score"] for h in reranked["hits"]], expected, atol=1e-5)
    assert expected == sorted(expected, reverse=True)
    top2 = search(client, query=query, rerank=True, top_k=2)
    assert [h["text"] for h in top2["hits"]] == texts[:2]
    # The same model behind the Cohere-style /v1/rerank route.
    answer = client.post(
        "/v1/rerank", json={"query": query, "documents": texts, "instruction": instruction}
    ).json()
    assert [r["index"] for r in answer["results"]] == [0, 1, 2, 3]
    np.testing.assert_allclose([r["relevance_score"] for r in answer["results"]], expected)


def test_without_a_usable_reranker_only_rerank_fails(settings: Settings, tmp_path: Path) -> None:
    api = start_client(settings)
    try:
        ingest(api)
        refused = api.post("/v1/search", json={"query": "owls", "rerank": True})
        assert refused.status_code == 422
        assert "QUARRY_RERANK_MODEL" in refused.json()["error"]["message"]
    finally:
        api.__exit__(None, None, None)
    broken = tmp_path / "broken-reranker"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen3"}')
    api = start_client(settings.model_copy(update={"rerank_model": str(broken)}))
    try:
        failed = api.post("/v1/search", json={"query": "owls", "rerank": True})
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "model_unavailable"
        assert "broken-reranker" in failed.json()["error"]["message"]
        assert search(api, query="owls")["hits"]  # search without rerank is unaffected
    finally:
        api.__exit__(None, None, None)


def test_a_remote_rerank_server_gives_the_local_scores(
    tmp_path: Path, minilm_path: str, tiny_reranker: Path
) -> None:
    (node,) = embedding_nodes(
        tmp_path / "node", minilm_path, 1, QUARRY_RERANK_MODEL=str(tiny_reranker)
    )
    try:
        texts = list(DOCS.values())
        remote = RemoteReranker(node.url + "/v1", str(tiny_reranker))
        local = Qwen3Reranker(tiny_reranker, device="cpu")
        np.testing.assert_allclose(
            remote.rerank("owls", texts, "find it"),
            local.rerank("owls", texts, "find it"),
            atol=1e-5,
        )
    finally:
        node.stop()
