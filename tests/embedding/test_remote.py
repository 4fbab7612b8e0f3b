"""The remote backend against real `quarry serve --embeddings-only` processes on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedding.balancer import ServerState
from embedding.errors import EmbeddingUnavailableError
from embedding.model_source import resolve_model
from embedding.remote import RemoteEmbedder, RemoteOptions
from embedding.st_embedder import SentenceTransformerEmbedder

from ..servers import Process, embedding_nodes, free_port

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DOCS = [
    "The mitochondria is the powerhouse of the cell.",
    "Quarry stores vectors in Qdrant and caches embeddings in Redis.",
    "x",
    "A very long passage about rivers and mountains. " * 80,  # past MiniLM's 256 tokens
    *[f"Document number {i} talks about topic {i % 7} at length." for i in range(60)],
]
QUERIES = ["what powers the cell?", "where are vectors stored", "rivers " * 400]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Process]]:
    running = embedding_nodes(tmp_path_factory.mktemp("nodes"), MINILM, 3)
    yield running
    for node in running:
        node.stop()


def remote(
    urls: list[str], model: str = MINILM, dimension: int | None = None, **options: float
) -> RemoteEmbedder:
    source = resolve_model(model, weights=False)
    opts = RemoteOptions(
        urls=tuple(urls),
        model_name=source.model_id,
        **{"timeout_s": 5.0, "retry_s": 20.0, "health_interval_s": 0.3, **options},  # type: ignore[arg-type]
    )
    return RemoteEmbedder(source, opts, dimension=dimension)


def test_remote_vectors_equal_the_local_model_and_spread_over_servers(
    nodes: list[Process], minilm_path: str
) -> None:
    local = SentenceTransformerEmbedder(resolve_model(minilm_path))
    client = remote([n.url + "/v1" for n in nodes], batch_size=4)
    try:
        assert client.recipe == local.recipe  # same collections, same cache keys
        docs = client.embed_documents(DOCS)
        np.testing.assert_allclose(docs, local.embed_documents(DOCS), atol=1e-5)
        queries = client.embed_queries(QUERIES, "Given a question, find passages")
        np.testing.assert_allclose(queries, local.embed_queries(QUERIES, None), atol=1e-5)
        served = {s.url: s.requests for s in client.balancer.snapshot()}
        assert all(count >= 1 for count in served.values()), served
        assert client.stats.texts == len(DOCS) + len(QUERIES)
    finally:
        client.close()


@pytest.fixture(scope="module")
def qwen_node(tmp_path_factory: pytest.TempPathFactory, tiny_qwen: Path) -> Iterator[Process]:
    (node,) = embedding_nodes(tmp_path_factory.mktemp("qwen-node"), str(tiny_qwen), 1)
    yield node
    node.stop()


def test_qwen3_instruction_and_matryoshka_cut_happen_client_side(
    qwen_node: Process, tiny_qwen: Path
) -> None:
    local = SentenceTransformerEmbedder(resolve_model(str(tiny_qwen)), dimension=32)
    client = remote([qwen_node.url + "/v1"], model=str(tiny_qwen), dimension=32)
    try:
        assert client.recipe == local.recipe
        instruction = "Given a scientific claim, retrieve documents that support it"
        queries = client.embed_queries(QUERIES[:2], instruction)
        assert queries.shape == (2, 32)
        np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-6)
        expected = local.embed_queries(QUERIES[:2], instruction)
        np.testing.assert_allclose(queries, expected, atol=1e-5)
        plain = client.embed_queries(QUERIES[:2], None)
        assert not np.allclose(plain, queries, atol=1e-3), "the instruction must change queries"
        docs = client.embed_documents(DOCS[:5])
        np.testing.assert_allclose(docs, local.embed_documents(DOCS[:5]), atol=1e-5)
    finally:
        client.close()


def test_hung_and_dead_servers_are_ejected_and_the_work_goes_elsewhere(
    tmp_path: Path, minilm_path: str
) -> None:
    nodes = embedding_nodes(tmp_path, MINILM, 3)
    client = remote([n.url + "/v1" for n in nodes], timeout_s=3.0, batch_size=2, eject_after=2)
    local = SentenceTransformerEmbedder(resolve_model(minilm_path))
    try:
        client.embed_documents(DOCS[:6])  # all three in service
        nodes[0].kill()
        nodes[1].pause()
        vectors = client.embed_documents(DOCS)
        np.testing.assert_allclose(vectors, local.embed_documents(DOCS), atol=1e-5)
        # The hung one goes out on its timed-out requests or, when the dead one went out
        # first (slowness alone may take out only one of three), on two timed-out probes.
        deadline = time.monotonic() + 15
        while True:
            states = {s.url: s for s in client.balancer.snapshot()}
            dead, hung, alive = (states[n.url + "/v1"] for n in nodes)
            if hung.state is ServerState.EJECTED or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert dead.state is ServerState.EJECTED and "connect" in (dead.reason or "")
        assert hung.state is ServerState.EJECTED and "timed out" in (hung.reason or "")
        assert alive.state is ServerState.UP and alive.errors == 0
        nodes[1].resume()  # the hung one recovers: probed, then trusted after a request
        deadline = time.monotonic() + 20
        while states[nodes[1].url + "/v1"].state is ServerState.EJECTED:
            assert time.monotonic() < deadline, client.balancer.snapshot()
            time.sleep(0.2)
            states = {s.url: s for s in client.balancer.snapshot()}
        before = states[nodes[1].url + "/v1"].requests
        deadline = time.monotonic() + 60
        while True:  # on probation it gets one request at a time; a success puts it back
            client.embed_documents(DOCS[:20])
            back = {s.url: s for s in client.balancer.snapshot()}[nodes[1].url + "/v1"]
            if back.state is ServerState.UP or time.monotonic() > deadline:
                break
        # (on a loaded machine its first request may time out: out again, probed, back)
        assert back.state is ServerState.UP and back.requests > before, back
    finally:
        client.close()
        for node in nodes:
            node.stop()


def test_a_batch_too_large_for_a_server_is_split(tmp_path: Path, minilm_path: str) -> None:
    (node,) = embedding_nodes(tmp_path, MINILM, 1, QUARRY_MAX_BODY_MB="0.001")
    client = remote([node.url + "/v1"], batch_size=32)
    try:
        texts = [f"sentence {i} about a moderately long subject matter" for i in range(40)]
        vectors = client.embed_documents(texts)
        local = SentenceTransformerEmbedder(resolve_model(minilm_path))
        np.testing.assert_allclose(vectors, local.embed_documents(texts), atol=1e-5)
        (server,) = client.balancer.snapshot()
        assert server.requests >= 4 and server.errors == 0  # 413s were split, not failures
    finally:
        client.close()
        node.stop()


def test_all_servers_down_fails_a_search_at_once_with_the_reason() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    client = remote([dead], retry_s=3.0)
    try:
        started = time.monotonic()
        with pytest.raises(EmbeddingUnavailableError) as caught:
            client.embed_queries(["anything"], None)
        assert dead in caught.value.message and "connect" in caught.value.message
        assert caught.value.status == 503
        assert time.monotonic() - started < 6
    finally:
        client.close()


def test_the_openai_client_talks_to_an_embeddings_only_node(
    nodes: list[Process], minilm_path: str
) -> None:
    import openai

    client = openai.OpenAI(base_url=nodes[0].url + "/v1", api_key="unused")
    texts = ["first text", "second text"]
    answer = client.embeddings.create(model=MINILM, input=texts)  # base64 under the hood
    assert [item.index for item in answer.data] == [0, 1]
    local = SentenceTransformerEmbedder(resolve_model(minilm_path)).embed_documents(texts)
    np.testing.assert_allclose(np.array([d.embedding for d in answer.data]), local, atol=1e-6)
    assert answer.usage.prompt_tokens > 4
    short = client.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=64)
    assert len(short.data[0].embedding) == 64
    assert [m.id for m in client.models.list()] == [MINILM]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="someone/else", input="x")


def test_an_embeddings_only_node_serves_nothing_else(nodes: list[Process]) -> None:
    url = nodes[0].url
    assert httpx.get(url + "/readyz").json()["checks"].keys() == {"model"}
    assert httpx.get(url + "/v1/documents").status_code == 404
    assert httpx.post(url + "/v1/search", json={"query": "x"}).status_code == 404
    assert "quarry_embedding_texts" in httpx.get(url + "/metrics").text
    assert not (Path(nodes[0].env["QUARRY_DATA_DIR"]) / "owner.json").exists()


class FakeBusyServer:
    """An embedding server that answers every request 429 (busy), as an overloaded one
    does: it stays in service (busy is not broken), so only the deadline ends the wait."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.requests = 0
        fake = self

        class Busy(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = b'{"error": "busy"}'
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_server_that_is_always_busy_fails_the_call_at_its_deadline() -> None:
    import threading

    busy = FakeBusyServer()
    client = remote([busy.url], retry_s=2.0)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            client.embed_documents(["a text to embed"])
        except BaseException as exc:
            outcome.append(exc)

    try:
        started = time.monotonic()
        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(15)
        assert not worker.is_alive(), "still retrying long past retry_s"
        (error,) = outcome
        assert isinstance(error, EmbeddingUnavailableError) and "429" in error.message
        assert time.monotonic() - started < 10 and busy.requests >= 2  # retried, then gave up
    finally:
        client.close()
        busy.close()
