"""Ingestion through remote embedding servers, with servers killed and hung mid-ingest.

Both topologies an operator runs: Quarry's own client-side balancing over three
`quarry serve --embeddings-only` nodes, and Debian's nginx (least_conn) in front of them.
Every chunk must be stored once, with the vector the local model gives its text. The
documents are text-bearing ones of ../shared/docs that parse without OCR or LibreOffice:
what is tested here is embedding, and those parsers are tested on their own.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.resources import Resources
from app.settings import Settings
from embedding.st_embedder import SentenceTransformerEmbedder
from ingest.parsing import parse_file
from ingest.sources import expand_paths

from ..conftest import SHARED
from ..servers import (
    Nginx,
    Process,
    embedding_nodes,
    quarry_env,
    stored_chunks,
    stored_vectors,
    wait_job,
)
from .test_hardening import upload

pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not (SHARED / "docs").is_dir(), reason="../shared/docs is absent"),
]


# many chunks (hundreds of remote requests), in seconds of parsing
FAILOVER_DOCS = frozenset(
    {
        "norwich-city.txt",
        "example-10k-1p.html",
        "csv-with-long-lines.csv",
        "handbook-1p.docx",
        "docx-tables.docx",
        "README.md",
        "README.rst",
        "simple.json",
        "factbook.xml",
        "fake-email.eml",
        "sample-presentation.pptx",
        "vodafone.xlsx",
        "multi-column-2p.pdf",
    }
)


def _redis(redis_process: Any, db: int) -> str:
    """Separate Redis databases: a run must not be served from another run's cache."""
    return str(redis_process.url).rsplit("/", 1)[0] + f"/{db}"


Reference = tuple[list[Path], dict[str, list[str]], SentenceTransformerEmbedder]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Iterator[Reference]:
    """The documents, each one's chunk texts as parsed and chunked here, and the local
    model every stored vector must agree with."""
    found, _ = expand_paths([str(SHARED / "docs")])
    documents = [f for f, _ in found if f.name in FAILOVER_DOCS]
    assert len(documents) == len(FAILOVER_DOCS), "../shared/docs lacks some documents"
    data = tmp_path_factory.mktemp("local")
    # fp32, as embedding nodes serve it (`quarry serve --embeddings-only` on a CPU)
    resources = Resources(
        Settings(_env_file=None, data_dir=data, embedding_model=minilm_path, quantize="none")
    )
    try:
        chunker = resources.chunker()
        chunks = {
            path.name: sorted(c.text for c in chunker.chunk(parse_file(path))) for path in documents
        }
        local = resources.base_embedder
        assert isinstance(local, SentenceTransformerEmbedder)
        yield documents, chunks, local
    finally:
        resources.close()


@pytest.fixture()
def nodes(tmp_path: Path, minilm_path: str) -> Iterator[list[Process]]:
    running = embedding_nodes(tmp_path / "nodes", minilm_path, 3)
    yield running
    for node in running:
        node.stop()


def _ingest_while_failing(
    api: Process, nodes: list[Process], documents: list[Path]
) -> dict[str, Any]:
    job_id = upload(api.url, documents)
    deadline = time.monotonic() + 300
    while httpx.get(f"{api.url}/v1/jobs/{job_id}").json()["progress"]["embedded"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    nodes[0].kill()  # a dead server: connections refused
    time.sleep(0.5)
    nodes[1].pause()  # a hung server: connections accepted, nothing answered
    return wait_job(api.url, job_id, timeout=600)


def _check_same_as_local(job: dict[str, Any], data_dir: Path, reference: Reference) -> None:
    """Every file done, its chunks stored once each and exactly as parsed and chunked here,
    and every stored vector the local model's for its text (remote batches, retries and
    failover change nothing)."""
    _, chunks, local = reference
    assert job["state"] == "done", [f for f in job["files"] if f["status"] != "ingested"]
    assert all(f["error"] is None for f in job["files"])
    stored = stored_vectors(data_dir, "served")
    by_source: dict[str, list[str]] = {}
    for _, source, text in stored_chunks(data_dir, "served"):
        by_source.setdefault(source, []).append(text)
    assert {k: sorted(v) for k, v in by_source.items()} == chunks
    ids = sorted(stored)
    np.testing.assert_allclose(
        np.stack([stored[i][1] for i in ids]),
        local.embed_documents([stored[i][0] for i in ids]),
        atol=1e-5,
    )


def _api(tmp_path: Path, minilm_path: str, redis_url: str, urls: list[str]) -> Process:
    env = quarry_env(
        tmp_path / "data",
        minilm_path,
        redis_url,
        QUARRY_COLLECTION="served",
        QUARRY_EMBEDDING_URLS=",".join(urls),
        QUARRY_REMOTE_TIMEOUT_S="5",
        QUARRY_REMOTE_HEALTH_INTERVAL_S="1",
        QUARRY_REMOTE_BATCH_SIZE="8",
    )
    api = Process("serve", env, tmp_path / "api.log")
    api.start()
    return api


def test_client_side_balancing_survives_a_dead_and_a_hung_server(
    tmp_path: Path, minilm_path: str, redis_process: Any, nodes: list[Process], reference: Reference
) -> None:
    documents = reference[0]
    api = _api(tmp_path, minilm_path, _redis(redis_process, 6), [n.url + "/v1" for n in nodes])
    try:
        job = _ingest_while_failing(api, nodes, documents)
        deadline = time.monotonic() + 15  # the hung one may go out on its probes, after
        while True:
            ready = httpx.get(api.url + "/readyz").json()
            servers = {s["url"]: s for s in ready["checks"]["model"]["servers"]}
            if servers[nodes[1].url + "/v1"]["state"] == "ejected":
                break
            assert time.monotonic() < deadline, servers
            time.sleep(0.2)
        assert servers[nodes[0].url + "/v1"]["state"] == "ejected"
        assert servers[nodes[1].url + "/v1"]["state"] == "ejected"
        assert ready["status"] == "ready" and "2 of 3" in ready["checks"]["model"]["reason"]
        metrics = httpx.get(api.url + "/metrics").text
        assert f'quarry_embedding_server_up{{server="{nodes[2].url}/v1"}} 1.0' in metrics
        assert f'quarry_embedding_server_up{{server="{nodes[0].url}/v1"}} 0.0' in metrics
    finally:
        api.stop()
    _check_same_as_local(job, tmp_path / "data", reference)


@pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
    reason="nginx is not installed (apt-get install nginx)",
)
def test_nginx_least_conn_in_front_survives_a_dead_and_a_hung_server(
    tmp_path: Path, minilm_path: str, redis_process: Any, nodes: list[Process], reference: Reference
) -> None:
    documents = reference[0]
    nginx = Nginx(tmp_path / "nginx", [n.url for n in nodes], read_timeout_s=4)
    nginx.start()
    api = _api(tmp_path, minilm_path, _redis(redis_process, 7), [nginx.url + "/v1"])
    try:
        job = _ingest_while_failing(api, nodes, documents)
    finally:
        api.stop()
        nginx.stop()
    _check_same_as_local(job, tmp_path / "data", reference)
