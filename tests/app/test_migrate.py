"""Moving a collection to another model (`app.migration`): built beside the live one while
it changes, swapped in at once, resumed after a crash, rolled back; and through a real
`quarry serve`, killed before its swap, while clients search without pause."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.migration import Migration
from app.migration_state import MigrationState
from app.migrations import MigrationBusyError, Migrations, offers
from app.resources import Resources
from ingest.sources import TextSource, document_id
from retrieval.errors import CollectionMovedError
from retrieval.models import ChunkRecord, side_name

from ..servers import Process, quarry, quarry_env, wait_job
from .test_backup import TEXTS


def _sources(store: Any, collection: str) -> set[str]:
    return {d.source for d in store.documents(collection) if d.complete}


def _ingest(resources: Resources, *names: int) -> None:
    report = resources.pipeline("c").run([TextSource(f"t{i}.txt", TEXTS[i]) for i in names])
    assert not report.errors, report.errors


class _Crash(Exception):
    pass


@pytest.fixture(params=["edge", "qdrant-local"])
def backend(request: pytest.FixtureRequest, resources: Resources, tmp_path: Path) -> Resources:
    """The embedded store, or the Qdrant server's store through qdrant-client's local mode."""
    if request.param == "qdrant-local":
        from qdrant_client import QdrantClient

        from retrieval.qdrant_store import QdrantServerStore

        local = QdrantServerStore(QdrantClient(path=str(tmp_path / "qdrant-local")))
        resources.__dict__["store"] = resources.__dict__["ingest_store"] = local
    return resources


def test_a_migration_follows_writes_swaps_and_rolls_back(
    backend: Resources, tiny_qwen: Path
) -> None:
    resources = backend
    store = resources.store
    _ingest(resources, 0, 1, 2, 3)
    minilm = store.recipe("c")
    assert minilm is not None
    assert offers(store, "Qwen3", "/models/qwen")[0]["collection"] == "c"
    migrations = Migrations(resources, keep_s=3600)
    state = migrations.prepare("c", str(tiny_qwen), None, False)
    with pytest.raises(MigrationBusyError):
        migrations.prepare("c", "other-model", None, False)
    with pytest.raises(MigrationBusyError, match="being moved"):  # one layout change at a time
        resources.backfill_sparse("c")

    changed: list[int] = []

    def save(now: MigrationState) -> None:  # the live collection changes mid-migration
        migrations.states.save(now)
        if now.done > 0 and not changed:
            changed.append(1)
            _ingest(resources, 4)
            store.delete_document("c", document_id("t0.txt", TEXTS[0].encode()))

    done = Migration(resources, state, save).run()
    assert done.stage == "done" and not done.error
    recipe = store.recipe("c")
    assert recipe is not None and recipe.model == "tiny-qwen3" and recipe.location
    assert _sources(store, "c") == {"t1.txt", "t2.txt", "t3.txt", "t4.txt"}
    assert store.collections() == ["c"]  # the kept one is listed nowhere
    kept = store.recipe(side_name("c", "previous"))
    assert kept is not None and kept.vectors_key == minilm.vectors_key
    hits = resources.search_service("c").search("c", "tea leaves", top_k=10).hits
    assert {h.source for h in hits} == _sources(store, "c")  # with the new model's vectors

    # A writer that embedded for the old model before the swap tries again
    late = ChunkRecord("x", np.ones(minilm.dimension, np.float32), {}, vectors=minilm.vectors_key)
    with pytest.raises(CollectionMovedError):
        store.upsert("c", [late])

    _ingest(resources, 5)  # with the collection's own (new) model
    assert store.recipe("c") == recipe
    back = migrations.run_here(migrations.prepare("c", None, None, True))
    assert back.stage == "done"
    restored = store.recipe("c")
    assert restored is not None and restored.vectors_key == minilm.vectors_key
    assert _sources(store, "c") == {"t1.txt", "t2.txt", "t3.txt", "t4.txt", "t5.txt"}

    Migrations(resources, keep_s=0).expire()  # the rollback window is over
    assert store.recipe(side_name("c", "next")) is None
    assert migrations.status("c").stage == "closed"


def test_a_migration_killed_mid_way_resumes_without_redoing_work(
    resources: Resources, tiny_qwen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.migration.BATCH", 2)  # two documents per step
    store = resources.store
    _ingest(resources, 0, 1, 2, 3, 4)
    migrations = Migrations(resources, keep_s=3600)
    state = migrations.prepare("c", str(tiny_qwen), None, False)

    def crash_after_two(now: MigrationState) -> None:
        migrations.states.save(now)
        if now.done == 2:
            raise _Crash

    with pytest.raises(_Crash):
        Migration(resources, state, crash_after_two).run()
    assert store.recipe("c").model != "tiny-qwen3"  # type: ignore[union-attr]
    again = migrations.prepare("c", str(tiny_qwen), None, False)  # asked again: resumed
    assert again.stage == "building" and again.done == 2
    seen: list[int] = []
    assert migrations.run_here(again, lambda now: seen.append(now.done)).stage == "done"
    assert min(seen) == 2  # what the new collection held was not moved again
    assert _sources(store, "c") == {f"t{i}.txt" for i in range(5)}
    assert store.recipe("c").model == "tiny-qwen3"  # type: ignore[union-attr]


def test_a_migration_killed_right_after_its_swap_finishes_on_resume(
    resources: Resources, tiny_qwen: Path
) -> None:
    _ingest(resources, 0, 1)
    migrations = Migrations(resources, keep_s=3600)
    state = migrations.prepare("c", str(tiny_qwen), None, False)

    def killed_at_the_swap(now: MigrationState) -> None:
        if now.stage == "swapped":
            raise _Crash  # swapped in the store; the state file still says building
        migrations.states.save(now)

    with pytest.raises(_Crash):
        Migration(resources, state, killed_at_the_swap).run()
    assert migrations.status("c").stage == "building"
    assert resources.store.recipe("c").model == "tiny-qwen3"  # type: ignore[union-attr]
    done = migrations.run_here(migrations.prepare("c", str(tiny_qwen), None, False))
    assert done.stage == "done"
    assert _sources(resources.store, "c") == {"t0.txt", "t1.txt"}
    assert resources.store.recipe(side_name("c", "previous")) is not None


def test_a_served_migration_killed_before_its_swap_resumes_while_searches_go_on(
    tmp_path: Path, minilm_path: str, redis_process: Any, tiny_qwen: Path
) -> None:
    env = quarry_env(
        tmp_path / "data",
        minilm_path,
        redis_process.url,
        QUARRY_MODEL_ROOTS=str(tiny_qwen.parent),
        QUARRY_FAILPOINTS="migrate_before_swap=kill",
    )
    server = Process("serve", env, tmp_path / "server.log")
    server.start()
    failures: list[str] = []
    stop, up = threading.Event(), threading.Event()
    answered = [0]

    def search_without_pause() -> None:
        while not stop.is_set():
            if not up.wait(0.1):
                continue
            try:
                answer = httpx.post(
                    f"{server.url}/v1/search", json={"query": "coffee", "top_k": 3}, timeout=30
                )
            except httpx.TransportError:
                time.sleep(0.05)  # the server is down (killed): nothing to answer
                continue
            if answer.status_code != 200 or not answer.json()["hits"]:
                failures.append(answer.text[:300])
            answered[0] += 1

    try:
        upload = httpx.post(
            f"{server.url}/v1/documents",
            files=[("files", (f"t{i}.txt", t.encode())) for i, t in enumerate(TEXTS[:4])],
            timeout=60,
        )
        assert wait_job(server.url, upload.json()["job_id"])["state"] == "done"
        up.set()
        searcher = threading.Thread(target=search_without_pause, daemon=True)
        searcher.start()
        outside = quarry(env, "migrate", "quarry", "--model", str(tmp_path), "--api", server.url)
        assert outside.returncode == 1 and "QUARRY_MODEL_ROOTS" in " ".join(outside.stderr.split())
        started = quarry(
            env, "migrate", "quarry", "--model", str(tiny_qwen), "--no-wait", "--api", server.url
        )
        assert started.returncode == 0, started.stderr
        assert server.process is not None
        server.process.wait(180)  # the failpoint kills it once the new collection is built
        up.clear()  # (a restarting server answers 503 until its model is loaded)
        env.pop("QUARRY_FAILPOINTS")
        server = Process("serve", env, tmp_path / "server.log")
        server.start()  # takes the migration up where it was
        up.set()
        late = httpx.post(
            f"{server.url}/v1/documents",
            files=[("files", ("t4.txt", TEXTS[4].encode()))],
            timeout=60,
        )
        finished = quarry(env, "migrate", "quarry", "--status", "--json", "--api", server.url)
        deadline = time.monotonic() + 180
        while '"done"' not in finished.stdout:
            assert time.monotonic() < deadline, finished.stdout + finished.stderr
            time.sleep(0.5)
            finished = quarry(env, "migrate", "quarry", "--status", "--json", "--api", server.url)
        assert wait_job(server.url, late.json()["job_id"])["state"] == "done"
        time.sleep(1)  # searches go on over the new vectors
        stop.set()
        searcher.join(30)
        listed = httpx.get(f"{server.url}/v1/collections", timeout=30).json()["collections"]
        assert [c["name"] for c in listed] == ["quarry"]
        assert listed[0]["recipe"]["model"] == "tiny-qwen3"
        found = httpx.post(
            f"{server.url}/v1/search", json={"query": "crows faces", "top_k": 10}, timeout=30
        ).json()["hits"]
        assert {h["source"] for h in found} == {f"t{i}.txt" for i in range(5)}
    finally:
        stop.set()
        server.stop()
    assert not failures, failures[:3]
    assert answered[0] > 0


def test_a_client_key_names_only_models_the_server_may_load(tmp_path: Path) -> None:
    from app.routes.migrations import check_model_location
    from embedding.errors import InvalidInputError

    models = tmp_path / "models"
    (models / "m").mkdir(parents=True)
    check_model_location(str(models / "m"), [models.resolve()], "")
    check_model_location("sentence-transformers/all-MiniLM-L6-v2", [], "")  # packaged
    check_model_location("/srv/own-model", [], "/srv/own-model")  # the server's own
    for model, why in (
        ("", "name the model"),
        (str(tmp_path), "outside QUARRY_MODEL_ROOTS"),
        ("../models/m", "outside QUARRY_MODEL_ROOTS"),
        ("someone/not-downloaded-here", "Hugging Face cache"),
    ):
        with pytest.raises(InvalidInputError, match=why) as refused:
            check_model_location(model, [models.resolve()], "")
        assert refused.value.detail == {"field": "model"}


def test_vectors_of_an_unrecorded_revision_still_match() -> None:
    from retrieval.models import CollectionRecipe, same_vectors

    old = CollectionRecipe(model="m", dimension=8, instruction="", revision="")
    new = CollectionRecipe(model="m", dimension=8, instruction="", revision="r2")
    assert same_vectors(new.vectors_key, old) and same_vectors(old.vectors_key, new)
    assert not same_vectors(new.vectors_key, CollectionRecipe("m", 8, "", revision="r1"))
    assert not same_vectors(new.vectors_key, CollectionRecipe("m", 16, "", revision="r2"))
    assert not same_vectors("org/m@r2/8", CollectionRecipe("m", 8, "", revision="r2"))


def test_a_width_the_model_lacks_is_refused_before_anything_is_built(
    resources: Resources, tiny_qwen: Path, minilm_path: str
) -> None:
    from embedding.errors import InvalidInputError

    _ingest(resources, 0)
    migrations = Migrations(resources, keep_s=3600)
    with pytest.raises(InvalidInputError, match="wider than") as wide:
        migrations.prepare("c", str(tiny_qwen), 4096, False)
    assert wide.value.detail == {"field": "dim"}
    with pytest.raises(InvalidInputError, match="already built"):
        migrations.prepare("c", minilm_path, None, False)
    with pytest.raises(InvalidInputError, match="no earlier version"):
        migrations.prepare("c", None, None, True)
    assert resources.store.recipe(side_name("c", "next")) is None


def test_a_rollback_returns_to_the_engine_the_kept_version_was_built_with(
    settings: Any, tiny_qwen: Path
) -> None:
    """A collection built fp32 (before the int8 default), moved to another model, rolls
    back to its fp32 vectors in a process configured int8: served by the engine it was
    built with, never refused for it."""
    fp32 = Resources(settings.model_copy(update={"quantize": "none"}))
    try:
        _ingest(fp32, 0, 1, 2)
        built = fp32.store.recipe("c")
        assert built is not None and built.engine == ""
        migrations = Migrations(fp32, keep_s=3600)
        assert (
            migrations.run_here(migrations.prepare("c", str(tiny_qwen), None, False)).stage
            == "done"
        )
    finally:
        fp32.close()
    int8 = Resources(settings.model_copy(update={"quantize": "int8"}))
    try:
        assert int8.embedder.recipe.engine == "onnx-int8"
        migrations = Migrations(int8, keep_s=3600)
        back = migrations.run_here(migrations.prepare("c", None, None, True))
        assert back.stage == "done" and not back.error
        restored = int8.store.recipe("c")
        assert restored is not None and restored.vectors_key == built.vectors_key
        _ingest(int8, 3)  # written afterwards with fp32 vectors, as the collection holds
        assert _sources(int8.store, "c") == {"t0.txt", "t1.txt", "t2.txt", "t3.txt"}
        hits = int8.search_service("c").search("c", TEXTS[3][:60], top_k=1).hits
        assert hits[0].source == "t3.txt"
    finally:
        int8.close()
