"""A dependency's failure is retried until it is back; it is never the file's fault."""

from __future__ import annotations

import shutil
import time

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

from .conftest import files, wait_for_job


def test_a_model_outage_makes_files_wait_then_go_in(settings: Settings, minilm_path: str) -> None:
    model = settings.data_dir.parent / "model-copy"
    shutil.copytree(minilm_path, model)
    weights = next(model.glob("*.safetensors"))
    hidden = weights.with_suffix(".away")
    weights.rename(hidden)  # the model cannot load: a dependency is down
    quick = {"embedding_model": str(model), "worker_retry_s": 0.2, "worker_retry_max_s": 0.3}
    app = create_app(settings.model_copy(update=quick))
    with TestClient(app) as api:
        job_id = api.post(
            "/v1/documents",
            files=files(("owls.txt", b"Owls hunt at night."), ("tea.txt", b"Tea is steeped.")),
        ).json()["job_id"]
        deadline = time.monotonic() + 60
        while (job := api.get(f"/v1/jobs/{job_id}").json())["state"] != "retrying":
            assert job["state"] in ("queued", "running"), job
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert job["error"]["code"] == "model_unavailable"
        assert {f["status"] for f in job["files"]} == {"retrying"}
        deadline = time.monotonic() + 20  # more attempts fail: still not the files' fault
        while (job := api.get(f"/v1/jobs/{job_id}").json())["attempts"] < 2:
            assert job["state"] in ("retrying", "running"), job
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert not any(f["status"] == "failed" for f in job["files"])
        assert not (settings.data_dir / "failures").exists() or not any(
            "owls" in p.read_text() for p in (settings.data_dir / "failures").iterdir()
        )
        hidden.rename(weights)  # the model is back
        done = wait_for_job(api, job_id, timeout=120)
        assert done["state"] == "done", done
        assert {f["status"] for f in done["files"]} == {"ingested"}
        hits = api.post("/v1/search", json={"query": "nocturnal birds", "top_k": 1}).json()
        assert hits["hits"][0]["source"] == "owls.txt"
