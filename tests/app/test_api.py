"""The HTTP API through the real app: upload -> job -> search, documents, errors, keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from app.settings import Settings
from retrieval.edge_store import EdgeStore
from retrieval.models import CollectionRecipe

from ..ingest.documents import write_document
from .conftest import files, start_client, wait_for_job

OWLS = "Owls hunt mice at night using silent flight and sharp hearing."
COFFEE = "Espresso is brewed by forcing hot water through finely ground coffee."


def _error(response, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "detail"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def test_upload_job_search_documents_round_trip(api: TestClient, tmp_path: Path) -> None:
    pdf = write_document(tmp_path, "pdf", OWLS, stem="owls")
    response = api.post(
        "/v1/documents",
        files=files(
            ("owls.pdf", pdf.read_bytes()), ("coffee.md", f"# Coffee\n\n{COFFEE}".encode())
        ),
        data={"metadata": json.dumps({"shelf": "b2", "tags": ["nature"]})},
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["accepted"] == ["owls.pdf", "coffee.md"] and accepted["rejected"] == []
    job = wait_for_job(api, accepted["job_id"])
    assert job["state"] == "done", job
    for entry in job["files"]:
        assert entry["status"] == "ingested" and entry["error"] is None
        assert entry["parsed"] >= 1
        assert entry["chunked"] == entry["embedded"] == entry["stored"] >= 1
    progress = job["progress"]
    assert progress["stored"] == sum(f["stored"] for f in job["files"])
    assert progress["fraction"] == 1
    assert progress["chunks_per_s"] > 0 and progress["eta_s"] == 0

    hits = api.post("/v1/search", json={"query": "nocturnal birds of prey", "top_k": 2}).json()
    assert hits["hits"][0]["source"] == "owls.pdf" and hits["hits"][0]["page"] == 1
    assert {"embed_ms", "search_ms", "total_ms"} <= set(hits["timings_ms"])
    assert hits["hits"][0]["metadata"] == {"shelf": "b2", "tags": ["nature"]}
    only_coffee = api.post(
        "/v1/search", json={"query": "birds", "filters": {"source": "coffee.md"}}
    ).json()["hits"]
    assert only_coffee and {h["source"] for h in only_coffee} == {"coffee.md"}
    tagged = api.post("/v1/search", json={"query": "birds", "filters": {"tags": "nature"}})
    assert len(tagged.json()["hits"]) == progress["stored"]

    page = api.get("/v1/documents", params={"source": "OWL"}).json()
    assert page["total"] == 1 and page["documents"][0]["source"] == "owls.pdf"
    assert api.get("/v1/documents", params={"meta": "shelf=b2"}).json()["total"] == 2
    assert api.get("/v1/documents", params={"meta": "shelf=zz"}).json()["total"] == 0
    assert api.get("/v1/documents", params={"limit": 1, "offset": 1}).json()["documents"][0]
    doc_id = page["documents"][0]["doc_id"]
    detail = api.get(f"/v1/documents/{doc_id}", params={"include_chunks": True}).json()
    assert detail["chunks"] == len(detail["chunk_list"])
    assert OWLS[:20] in detail["chunk_list"][0]["text"]
    assert "chunk_list" not in api.get(f"/v1/documents/{doc_id}").json()

    # The same upload again: nothing re-embedded, the files show as unchanged.
    again = api.post("/v1/documents", files=files(("owls.pdf", pdf.read_bytes())))
    assert wait_for_job(api, again.json()["job_id"])["files"][0]["status"] == "unchanged"

    # Re-ingest from the kept original: a new job, the same chunks afterwards.
    redo = api.post(f"/v1/documents/{doc_id}/reingest")
    assert redo.status_code == 202, redo.text
    assert wait_for_job(api, redo.json()["job_id"])["files"][0]["status"] == "ingested"
    assert api.get(f"/v1/documents/{doc_id}").json()["chunks"] == detail["chunks"]
    presets = api.get("/v1/instructions").json()
    assert "question_answering" in presets["presets"] and presets["default"]

    deleted = api.delete(f"/v1/documents/{doc_id}")
    assert deleted.status_code == 200 and deleted.json()["deleted_chunks"] == detail["chunks"]
    _error(api.get(f"/v1/documents/{doc_id}"), 404, "not_found")
    _error(api.delete(f"/v1/documents/{doc_id}"), 404, "not_found")
    _error(api.post(f"/v1/documents/{doc_id}/reingest"), 404, "not_found")
    recent = api.get("/v1/jobs").json()["jobs"]
    expected = [redo.json()["job_id"], again.json()["job_id"], accepted["job_id"]]
    assert [j["job_id"] for j in recent[:3]] == expected


def test_job_events_stream_progress_then_end(api: TestClient) -> None:
    job_id = api.post("/v1/documents", files=files(("owls.txt", OWLS.encode()))).json()["job_id"]
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = list(stream.iter_lines())
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event:")]
    assert events[-1] == "end" and "progress" in events
    _error(api.get("/v1/jobs/nope/events"), 404, "not_found")


def test_bad_uploads_are_refused_one_by_one(settings: Settings, tmp_path: Path) -> None:
    settings.max_file_mb = 0.01  # 10 kB per file
    settings.max_upload_mb = 0.5
    api = start_client(settings)
    try:
        cases = [
            (("empty.txt", b""), 422, "empty_file"),
            (("tool.exe", b"MZ\x90\x00"), 415, "unsupported_type"),
            (("..", b"dots"), 415, "unsupported_type"),
            (("x" * 1100 + ".txt", b"long"), 422, "invalid_filename"),
            (("huge.txt", b"a" * 20_000), 413, "file_too_large"),
            (("fake.pdf", b"this is not a pdf at all"), 422, "unreadable"),
        ]
        for (name, data), status, code in cases:
            error = _error(api.post("/v1/documents", files=files((name, data))), status, code)
            assert name[:80] in error["message"]
        unsupported = _error(api.post("/v1/documents", files=files(("x.exe", b"1"))), 415)
        assert ".pdf" in unsupported["message"] and ".docx" in unsupported["message"]
        assert not list((settings.data_dir / "jobs").glob("*/files/*"))  # nothing staged

        # A mixed upload keeps the good file and reports every bad one.
        mixed = api.post(
            "/v1/documents",
            files=files(
                ("good.txt", OWLS.encode()),
                ("empty.txt", b""),
                ("../evil.txt", b"x"),
                ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog"),
            ),
        )
        assert mixed.status_code == 202, mixed.text
        body = mixed.json()
        assert body["accepted"] == ["good.txt", "../evil.txt", "broken.pdf"]
        assert {r["code"] for r in body["rejected"]} == {"empty_file"}
        job = wait_for_job(api, body["job_id"])
        assert job["state"] == "partial"
        outcome = {f["name"]: (f["status"], (f["error"] or {}).get("code")) for f in job["files"]}
        assert outcome["good.txt"] == ("ingested", None)
        assert outcome["broken.pdf"][0] == "failed" and outcome["broken.pdf"][1]
        assert outcome["empty.txt"] == ("failed", "empty_file")
        assert outcome["../evil.txt"] == ("ingested", None)  # a label, stored as given
        listed = api.get("/v1/documents").json()
        assert sorted(d["source"] for d in listed["documents"]) == ["../evil.txt", "good.txt"]

        _error(
            api.post("/v1/documents", files=files(("a.txt", b"x")), data={"metadata": "{oops"}),
            422,
            "invalid_input",
        )
        _error(
            api.post("/v1/documents", files=files(("a.txt", b"x")), data={"metadata": "[1]"}),
            422,
        )
        _error(api.post("/v1/documents", data={"collection": "x"}), 422, "invalid_input")
        too_big = api.post("/v1/documents", files=files(("a.txt", b"b" * 600_000)))
        _error(too_big, 413, "payload_too_large")
        assert "0.5 MB" in too_big.json()["error"]["message"]
    finally:
        api.__exit__(None, None, None)


def test_search_errors(api: TestClient, settings: Settings) -> None:
    assert _error(api.post("/v1/search", json={"query": "   "}), 422, "invalid_input")["detail"]
    error = _error(api.post("/v1/search", json={"query": "x", "top_k": 5000}), 422)
    assert "top_k" in error["message"]
    _error(api.post("/v1/search", json={}), 422, "invalid_input")
    as_json = {"content-type": "application/json"}
    _error(api.post("/v1/search", content=b"{not json", headers=as_json), 422)
    _error(api.post("/v1/search", json={"query": "x", "collection": "nothing-here"}), 404)
    _error(api.post("/v1/search", json={"query": "x", "collection": "../bad"}), 422)
    _error(api.get("/v1/nowhere"), 404, "not_found")
    # A collection built with another model's recipe: 409 for search and upload alike.
    store = EdgeStore(settings.qdrant_path)
    store.ensure_collection("other", CollectionRecipe("some/other-model", 8, "x"))
    store.close()
    other = {"query": "x", "collection": "other"}
    _error(api.post("/v1/search", json=other), 409, "recipe_mismatch")
    upload = api.post("/v1/documents", files=files(("a.txt", b"x")), data={"collection": "other"})
    _error(upload, 409, "recipe_mismatch")


def test_api_keys(settings: Settings) -> None:
    settings.api_keys = "key-one, key-two"
    api = start_client(settings)
    try:
        _error(api.get("/v1/documents"), 401, "unauthorized")
        _error(api.get("/v1/documents", headers={"Authorization": "Bearer nope"}), 401)
        _error(api.post("/v1/search", json={"query": "x"}), 401)
        good = {"Authorization": "Bearer key-two"}
        assert api.get("/v1/documents", headers=good).status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics"):
            assert api.get(open_path).status_code == 200
    finally:
        api.__exit__(None, None, None)


def test_metrics_are_scrapeable(api: TestClient) -> None:
    api.post("/v1/documents", files=files(("owls.txt", OWLS.encode())))
    api.post("/v1/search", json={"query": "owls", "collection": "nothing"})
    model = api.get("/v1/models").json()["data"][0]["id"]
    api.post("/v1/embeddings", json={"input": ["a", "b"], "model": model})
    text = api.get("/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    latency = families["quarry_http_request_duration_seconds"]
    routes = {s.labels.get("route") for s in latency.samples}
    assert {"/v1/search", "/v1/documents", "/v1/embeddings"} <= routes
    texts = [s.value for s in families["quarry_embedding_texts"].samples]
    assert texts and texts[0] >= 2
    assert "quarry_cache_hits" in families and "quarry_ingest_queue_depth" in families
    assert "quarry_microbatch_size" in families and "quarry_jobs_finished" in families


def test_redis_down_is_degraded_then_recovers(settings: Settings, own_redis) -> None:  # type: ignore[no-untyped-def]
    settings.redis_url = own_redis.url
    api = start_client(settings)
    try:
        job = api.post("/v1/documents", files=files(("owls.txt", OWLS.encode()))).json()
        assert wait_for_job(api, job["job_id"])["state"] == "done"
        assert api.get("/readyz").json()["status"] == "ready"
        own_redis.stop()
        answer = api.post("/v1/search", json={"query": "silent hunters"})
        assert answer.status_code == 200 and answer.json()["hits"][0]["source"] == "owls.txt"
        ready = api.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert "Redis" in ready.json()["checks"]["cache"]["reason"]
        own_redis.start()
        import time

        time.sleep(2.5)  # the cache retries a failed server after 2 s
        assert api.get("/readyz").json()["status"] == "ready"
        before = api.get("/v1/stats").json()["cache"]["hits"]
        api.post("/v1/search", json={"query": "cached twice"})
        api.post("/v1/search", json={"query": "cached twice"})
        assert api.get("/v1/stats").json()["cache"]["hits"] == before + 1
    finally:
        api.__exit__(None, None, None)


def test_embeddings_are_openai_shaped(settings: Settings, tiny_qwen: Path) -> None:
    settings.embedding_model = str(tiny_qwen)
    api = start_client(settings)
    try:
        model = api.get("/v1/models").json()["data"][0]
        assert model["id"] == tiny_qwen.name and model["dimension"] > 8  # a name, not a path
        body = {"input": ["first text", "second"], "model": model["id"]}
        plain = api.post("/v1/embeddings", json=body).json()
        assert [d["index"] for d in plain["data"]] == [0, 1] and plain["object"] == "list"
        first = np.array(plain["data"][0]["embedding"], dtype=np.float32)
        assert len(first) == model["dimension"] and abs(np.linalg.norm(first) - 1) < 1e-4
        assert plain["usage"]["prompt_tokens"] == plain["usage"]["total_tokens"] >= 4
        import base64

        packed = api.post("/v1/embeddings", json=body | {"encoding_format": "base64"}).json()
        decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
        assert np.allclose(decoded, first, atol=1e-6)
        cut = api.post("/v1/embeddings", json=body | {"dimensions": 8}).json()
        short = cut["data"][0]["embedding"]
        assert len(short) == 8 and abs(np.linalg.norm(short) - 1) < 1e-4
        assert np.allclose(np.array(short) * np.linalg.norm(first[:8]), first[:8], atol=1e-5)
        as_query = api.post(
            "/v1/embeddings", json=body | {"input_type": "query", "instruction": "Find poems"}
        ).json()
        other = api.post(
            "/v1/embeddings", json=body | {"input_type": "query", "instruction": "Find code"}
        ).json()
        q1, q2 = (np.array(r["data"][0]["embedding"]) for r in (as_query, other))
        assert not np.allclose(q1, first) and not np.allclose(q1, q2)
        assert as_query["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]
        _error(api.post("/v1/embeddings", json=body | {"model": "gpt-4"}), 404, "model_not_found")
        _error(api.post("/v1/embeddings", json=body | {"dimensions": 100_000}), 422)
        _error(api.post("/v1/embeddings", json={"input": [], "model": model["id"]}), 422)
        _error(api.post("/v1/embeddings", json={"input": ["ok", " "], "model": model["id"]}), 422)
    finally:
        api.__exit__(None, None, None)


def test_unreachable_store_is_not_ready_and_503(settings: Settings) -> None:
    settings.qdrant_url = "http://127.0.0.1:9"  # nothing listens on the discard port
    api = start_client(settings)
    try:
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        assert ready.json()["checks"]["store"]["ok"] is False
        _error(api.post("/v1/search", json={"query": "x"}), 503, "store_unavailable")
        _error(api.post("/v1/documents", files=files(("a.txt", b"x"))), 503, "store_unavailable")
        assert api.get("/healthz").json() == {"status": "ok"}
    finally:
        api.__exit__(None, None, None)


def test_same_bytes_under_two_names_stay_two_documents(api: TestClient) -> None:
    job = api.post("/v1/documents", files=files(("a.txt", OWLS.encode()), ("b.txt", OWLS.encode())))
    done = wait_for_job(api, job.json()["job_id"])
    assert [f["status"] for f in done["files"]] == ["ingested", "ingested"]
    docs = {d["source"]: d["doc_id"] for d in api.get("/v1/documents").json()["documents"]}
    assert set(docs) == {"a.txt", "b.txt"} and docs["a.txt"] != docs["b.txt"]
    assert api.delete(f"/v1/documents/{docs['a.txt']}").status_code == 200
    hits = api.post("/v1/search", json={"query": "owls hunting", "top_k": 5}).json()["hits"]
    assert {h["source"] for h in hits} == {"b.txt"}
    again = api.post(f"/v1/documents/{docs['b.txt']}/reingest")  # its own original is kept
    assert again.status_code == 202, again.text
    redone = wait_for_job(api, again.json()["job_id"])
    assert redone["state"] == "done" and redone["files"][0]["status"] == "ingested"
    listed = api.get("/v1/documents").json()["documents"]
    assert [(d["source"], d["chunks"]) for d in listed] == [("b.txt", 1)]


def test_a_float_filter_is_refused_not_a_server_error(api: TestClient) -> None:
    api.post("/v1/documents", files=files(("owls.txt", OWLS.encode())))
    answer = api.post("/v1/search", json={"query": "owls", "filters": {"version": 1.5}})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_input"
    assert "filters" in answer.json()["error"]["message"]
