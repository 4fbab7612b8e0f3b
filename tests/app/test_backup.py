"""`quarry backup` and `quarry restore`: a backup taken through a real server while it
ingests, verified, restored into a fresh data dir, and searched hit for hit against the
original; a damaged backup is refused, and so is a data dir that holds data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..servers import Process, quarry_env, wait_job

TEXTS = [
    "Owls hunt mice at night using silent flight.",
    "Espresso is brewed by forcing hot water through coffee.",
    "Green tea leaves are steamed or pan-fired after picking.",
    "Sourdough rises slowly with wild yeast.",
    "Crows remember the faces of people who wronged them.",
    "Tides follow the moon twice a day.",
]
QUERIES = ["birds at night", "coffee brewing", "bread yeast", "the moon and the sea"]


def quarry(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Exit code, and stdout then stderr (rich's line wrapping undone in stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    return done.returncode, done.stdout + " ".join(done.stderr.split())


def hits(url: str) -> list[list[tuple[str, str, float]]]:
    found = []
    for query in QUERIES:
        answer = httpx.post(f"{url}/v1/search", json={"query": query, "top_k": 5}, timeout=30)
        assert answer.status_code == 200, answer.text
        found.append(
            [(h["source"], h["chunk_id"], round(h["score"], 4)) for h in answer.json()["hits"]]
        )
    return found


def test_a_backup_taken_during_an_ingest_restores_hit_for_hit(
    tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    env = quarry_env(tmp_path / "data", minilm_path, redis_process.url)
    server = Process("serve", env, tmp_path / "server.log")
    server.start()
    try:
        first = httpx.post(
            f"{server.url}/v1/documents",
            files=[("files", (f"t{i}.txt", t.encode())) for i, t in enumerate(TEXTS)],
            timeout=60,
        )
        assert wait_job(server.url, first.json()["job_id"])["state"] == "done"
        # A new version of every file arrives while the backup is taken
        second = httpx.post(
            f"{server.url}/v1/documents",
            files=[
                ("files", (f"t{i}.txt", f"{t} Rewritten.".encode())) for i, t in enumerate(TEXTS)
            ],
            timeout=60,
        )
        code, out = quarry(env, "backup", str(tmp_path / "during"), "--api", server.url, "--json")
        assert code == 0, out
        assert wait_job(server.url, second.json()["job_id"])["state"] == "done"
        code, out = quarry(env, "backup", str(tmp_path / "after"), "--api", server.url)
        assert code == 0, out
        original = hits(server.url)
    finally:
        server.stop()

    code, out = quarry(env, "backup", "--verify", str(tmp_path / "after"))
    assert code == 0 and "every file matches" in out, out
    restored_env = quarry_env(tmp_path / "restored", minilm_path, redis_process.url)
    code, out = quarry(restored_env, "restore", str(tmp_path / "after"), "--json")
    assert code == 0, out
    again = Process("serve", restored_env, tmp_path / "restored.log")
    again.start()
    try:
        assert hits(again.url) == original  # hit for hit, score for score
    finally:
        again.stop()

    # The backup taken mid-ingest holds each source in one complete version
    during_env = quarry_env(tmp_path / "during-data", minilm_path, redis_process.url)
    assert quarry(during_env, "restore", str(tmp_path / "during"))[0] == 0
    code, out = quarry(during_env, "docs", "list", "--json")
    assert code == 0, out
    docs = json.loads(out)
    assert sorted(d["source"] for d in docs) == [f"t{i}.txt" for i in range(len(TEXTS))]
    assert all(d["complete"] for d in docs)


def test_a_damaged_backup_and_a_full_data_dir_are_refused(
    tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    env = quarry_env(tmp_path / "data", minilm_path, redis_process.url)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "owls.txt").write_text(TEXTS[0])
    assert quarry(env, "ingest", str(notes))[0] == 0
    assert quarry(env, "backup", str(tmp_path / "b"))[0] == 0
    code, out = quarry(env, "backup", str(tmp_path / "b"))
    assert code == 1 and "not empty" in out

    code, out = quarry(env, "restore", str(tmp_path / "b"))  # into the data dir it came from
    assert code == 1 and "holds data already" in out and "--force" in out
    assert quarry(env, "restore", str(tmp_path / "b"), "--force")[0] == 0

    kept = next((tmp_path / "b" / "originals").rglob("*.*"))
    kept.write_bytes(kept.read_bytes() + b"tampered")
    code, out = quarry(env, "backup", "--verify", str(tmp_path / "b"), "--json")
    assert code == 1 and json.loads(out)["problems"] == [
        f"{kept.relative_to(tmp_path / 'b').as_posix()}: changed since the backup "
        "(size or SHA-256 differs)"
    ]
    fresh = quarry_env(tmp_path / "fresh", minilm_path, redis_process.url)
    code, out = quarry(fresh, "restore", str(tmp_path / "b"))
    assert code == 1 and "does not verify" in out


def test_a_copy_taken_mid_replacement_keeps_the_newest_complete_version(tmp_path: Path) -> None:
    """Taken between a new version's write and the old one's removal, a copy holds both
    (and maybe a third still being written): the backup keeps the newest complete one."""
    import numpy as np

    from app.backup import tidy
    from retrieval.edge_store import EdgeStore
    from retrieval.models import ChunkRecord, CollectionRecipe, chunk_id

    store = EdgeStore(tmp_path)
    store.ensure_collection("c", CollectionRecipe("m", 4, "i"))
    vector = np.array([1.0, 0, 0, 0], dtype=np.float32)

    def version(doc_id: str, seq: int, written: int, of: int, source: str = "a.txt") -> list:  # type: ignore[type-arg]
        payload = {"doc_id": doc_id, "source": source, "chunk_count": of, "seq": seq}
        return [
            ChunkRecord(chunk_id(doc_id, i), vector, payload | {"chunk_index": i, "text": "x"})
            for i in range(written)
        ]

    store.upsert("c", version("old", 1, 2, 2) + version("new", 2, 3, 3) + version("half", 3, 1, 4))
    store.upsert("c", version("other", 1, 1, 1, source="b.txt"))
    assert tidy(store, "c") == 2 + 1  # the old version's chunks and the half-written one's
    assert sorted((d.doc_id, d.chunks) for d in store.documents("c")) == [("new", 3), ("other", 1)]
    store.close()


@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="needs a Qdrant server (QDRANT_URL)")
def test_collections_on_a_qdrant_server_are_backed_up_by_snapshot_and_restored(
    tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    import uuid

    from app import backup as backups
    from app.resources import Resources
    from app.settings import Settings
    from ingest.sources import TextSource

    name = f"b{uuid.uuid4().hex[:8]}"
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        embedding_model=minilm_path,
        redis_url=redis_process.url,
        qdrant_url=os.environ["QDRANT_URL"],
    )
    resources = Resources(settings)
    try:
        texts = [TextSource(f"t{i}.txt", t) for i, t in enumerate(TEXTS)]
        assert not resources.pipeline(name).run(texts).errors
        service = resources.search_service(name)
        before = [[h.chunk_id for h in service.search(name, q).hits] for q in QUERIES]
        manifest = backups.take(resources.store, settings, tmp_path / "backup")
        assert name in manifest["collections"] and not backups.verify(tmp_path / "backup")
        resources.store.drop_collection(name)
        restored = backups.restore(tmp_path / "backup", settings, force=True)
        assert name in restored["collections"]
        service = resources.search_service(name)
        assert [[h.chunk_id for h in service.search(name, q).hits] for q in QUERIES] == before
    finally:
        resources.store.drop_collection(name)
        resources.close()
