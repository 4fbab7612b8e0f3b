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
    app = create_app(settings.model_copy(update={"embedding_model": str(model)}))
    with TestClient(app) as api:
        runner = app.state.quarry.jobs
        runner.retry_delay = runner.max_retry_delay = 0.3
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
        time.sleep(1.5)  # several attempts fail meanwhile: still not the files' fault
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] in ("retrying", "running") and job["attempts"] >= 2
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
