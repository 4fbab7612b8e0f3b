"""`quarry serve` as its own process, driven over loopback: the openai client, uploads,
search, and a SIGKILL in the middle of an ingestion job."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.resources import Resources
from app.settings import Settings
from ingest.sources import FileSource

from ..servers import Process, stored_chunks, wait_job

WORDS = [
    "river",
    "mountain",
    "glacier",
    "copper",
    "violin",
    "harbor",
    "lantern",
    "meadow",
    "falcon",
    "quartz",
    "orchard",
    "thunder",
    "compass",
    "saffron",
    "tundra",
    "beacon",
    "marble",
    "willow",
    "ember",
    "canyon",
    "prairie",
    "cobalt",
    "lagoon",
    "summit",
    "velvet",
    "nectar",
    "basalt",
    "juniper",
    "cedar",
    "monsoon",
]


def test_openai_client_upload_job_search_over_loopback(server: Process, minilm_path: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    assert model == "sentence-transformers/all-MiniLM-L6-v2"  # its public name, not a path
    short = client.embeddings.create(model="all-MiniLM-L6-v2", input="owls", dimensions=32)
    assert len(short.data[0].embedding) == 32
    texts = ["Owls hunt at night.", "Espresso needs finely ground coffee."]
    result = client.embeddings.create(model=model, input=texts)  # the client asks for base64
    assert [item.index for item in result.data] == [0, 1] and result.usage.prompt_tokens > 4
    as_float = client.embeddings.create(model=model, input=texts, encoding_format="float")
    assert len(as_float.data[0].embedding) == 384
    assert np.allclose(result.data[1].embedding, as_float.data[1].embedding, atol=1e-6)
    one = client.embeddings.create(model=model, input=texts[0], dimensions=64)
    assert len(one.data[0].embedding) == 64

    upload = httpx.post(
        f"{server.url}/v1/documents",
        files=[
            ("files", ("owls.txt", b"Owls hunt mice at night with silent flight.")),
            ("files", ("coffee.txt", b"Espresso is brewed from finely ground coffee beans.")),
        ],
        data={"metadata": '{"shelf": "b2"}'},
        timeout=30,
    )
    assert upload.status_code == 202, upload.text
    job = wait_job(server.url, upload.json()["job_id"])
    assert job["state"] == "done" and job["progress"]["stored"] == 2
    hits = httpx.post(
        f"{server.url}/v1/search", json={"query": "coffee brewing", "top_k": 1}, timeout=30
    ).json()["hits"]
    assert hits[0]["source"] == "coffee.txt" and hits[0]["metadata"] == {"shelf": "b2"}
    assert "quarry_http_request_duration_seconds" in httpx.get(f"{server.url}/metrics").text


def _corpus(folder: Path, count: int) -> list[Path]:
    rng = random.Random(7)
    folder.mkdir()
    paths = []
    for index in range(count):
        paragraphs = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 140))).capitalize() + "."
            for _ in range(rng.randint(8, 14))
        ]
        path = folder / f"doc-{index:03d}.txt"
        path.write_text("\n\n".join(paragraphs), encoding="utf-8")
        paths.append(path)
    return paths


def test_sigkill_during_a_job_then_restart_gives_exactly_a_clean_run(
    server_env: dict[str, str], tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    paths = _corpus(tmp_path / "corpus", 24)
    server = Process("serve", server_env, tmp_path / "server.log")
    server.start()
    try:
        upload = httpx.post(
            f"{server.url}/v1/documents",
            files=[("files", (p.name, p.read_bytes())) for p in paths],
            timeout=60,
        )
        job_id = upload.json()["job_id"]
        deadline = time.monotonic() + 120
        while True:  # kill once some, but not all, chunks are stored
            job = httpx.get(f"{server.url}/v1/jobs/{job_id}").json()
            if job["progress"]["stored"] > 0:
                break
            assert job["state"] in ("queued", "running") and time.monotonic() < deadline
            time.sleep(0.05)
        server.kill()
        assert job["state"] == "running", "the job ended before it could be interrupted"
        server.start()
        finished = wait_job(server.url, job_id)
    finally:
        server.stop()
    tries = [(f["name"], f["attempts"], f["lost"], f["error"]) for f in finished["files"]]
    assert finished["state"] == "done" and finished["attempts"] == 2, tries
    assert {f["status"] for f in finished["files"]} <= {"ingested", "unchanged"}
    assert not (tmp_path / "data" / "jobs" / job_id / "files").exists()

    clean_dir = tmp_path / "clean"
    settings = Settings(
        _env_file=None, data_dir=clean_dir, embedding_model=minilm_path, redis_url=redis_process.url
    )
    resources = Resources(settings)
    try:
        report = resources.pipeline("served").run([FileSource(p, display=p.name) for p in paths])
    finally:
        resources.close()
    assert report.ingested == len(paths) and not report.errors
    served = stored_chunks(tmp_path / "data", "served")
    clean = stored_chunks(clean_dir, "served")
    assert len(served) == len(clean) == report.chunks
    assert served == clean


def test_with_no_model_configured_a_fresh_machine_still_indexes(
    server_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No GPU, no hub, nothing cached: the packaged model runs, and everyone is told so."""
    import streamlit as st

    from ..ui.test_pages import page, texts

    env = {k: v for k, v in server_env.items() if k != "QUARRY_EMBEDDING_MODEL"}
    env |= {"HF_HUB_CACHE": str(tmp_path / "empty-hub"), "QUARRY_DEVICE": "cpu"}
    running = Process("serve", env, tmp_path / "default.log")
    running.start()
    try:
        model = httpx.get(f"{running.url}/readyz").json()["checks"]["model"]
        assert model["model"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert "Qwen3-Embedding-0.6B" in model["warning"]
        assert "QUARRY_EMBEDDING_MODEL" in model["warning"]
        upload = httpx.post(
            f"{running.url}/v1/documents",
            files=[("files", ("kiln.txt", b"The kiln fires stoneware at 1280 degrees."))],
            timeout=30,
        )
        assert wait_job(running.url, upload.json()["job_id"])["state"] == "done"
        hits = httpx.post(
            f"{running.url}/v1/search", json={"query": "firing pottery", "top_k": 1}, timeout=30
        ).json()["hits"]
        assert hits[0]["source"] == "kiln.txt"
        recipe = httpx.get(f"{running.url}/v1/collections").json()["collections"][0]["recipe"]
        assert recipe["model"] == "sentence-transformers/all-MiniLM-L6-v2"
        monkeypatch.setenv("QUARRY_API_URL", running.url)
        st.cache_resource.clear()
        shown = texts(page("status"))
        assert "all-MiniLM-L6-v2" in shown and "QUARRY_EMBEDDING_MODEL" in shown
    finally:
        running.stop()
    assert "embedding model: sentence-transformers/all-MiniLM-L6-v2" in (
        (tmp_path / "default.log").read_text()
    )
