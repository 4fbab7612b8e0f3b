"""`quarry sync s3://BUCKET/PREFIX`: a collection follows a bucket through adds, edits,
renames and deletions, against a real S3-compatible HTTP server (moto's standalone server,
started as its own process) through the CLI and the local seam."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..servers import free_port
from .test_sync import run, stored

pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")


@pytest.fixture()
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A running S3-compatible server's URL; AWS credentials for it in the environment."""
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            break
        except httpx.TransportError:
            assert process.poll() is None and time.monotonic() < deadline, "moto did not start"
            time.sleep(0.2)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "quarry-test",
        "AWS_SECRET_ACCESS_KEY": "quarry-test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture()
def bucket(
    s3: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, minilm_path: str, redis_process: Any
) -> Any:
    monkeypatch.setenv("QUARRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QUARRY_EMBEDDING_MODEL", minilm_path)
    monkeypatch.setenv("QUARRY_REDIS_URL", redis_process.url)
    client = boto3.client("s3", endpoint_url=s3)
    client.create_bucket(Bucket="notes")
    put = {
        "team/owls.md": "Owls hunt mice at night using silent flight.",
        "team/drinks/coffee.txt": "Espresso is brewed by forcing hot water through coffee.",
        "team/tea.txt": "Green tea leaves are steamed or pan-fired after picking.",
        "team/water.txt": "Soft water has few dissolved minerals.",
        "team/.draft.txt": "A hidden draft is not synced.",
        "team/empty-folder/": "",
        "elsewhere/bread.txt": "Sourdough rises slowly with wild yeast.",
    }
    for key, text in put.items():
        client.put_object(Bucket="notes", Key=key, Body=text.encode())
    return client


def sync(s3: str, address: str = "s3://notes/team", *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code, out = run("sync", address, "--endpoint", s3, "--json", *extra)
    return code, json.JSONDecoder().raw_decode(out, out.index("{"))[0]  # (stderr after it)


def test_a_bucket_is_followed_and_unchanged_objects_are_never_downloaded(
    s3: str, bucket: Any
) -> None:
    code, first = sync(s3)
    assert code == 0 and first["ingest"]["ingested"] == 4, first
    assert set(stored()) == {"owls.md", "drinks/coffee.txt", "tea.txt", "water.txt"}

    code, again = sync(s3)  # nothing changed: nothing downloaded, sent, parsed or embedded
    assert code == 0 and again["unchanged"] == 4 and again["fetched"] == 0
    assert again["ingest"]["files"] == 0

    bucket.put_object(Bucket="notes", Key="team/owls.md", Body=b"Owls swallow prey whole.")
    bucket.delete_object(Bucket="notes", Key="team/drinks/coffee.txt")
    bucket.copy_object(
        Bucket="notes",
        Key="team/green-tea.txt",
        CopySource={"Bucket": "notes", "Key": "team/tea.txt"},
    )
    bucket.delete_object(Bucket="notes", Key="team/tea.txt")
    bucket.put_object(Bucket="notes", Key="team/bread.txt", Body=b"Rye bread is dense and sour.")
    code, third = sync(s3)
    assert code == 0, third
    assert third["ingest"]["ingested"] == 3 and third["fetched"] == 3  # edit, rename, new
    assert sorted(third["deleted"]) == ["drinks/coffee.txt", "tea.txt"]
    assert set(stored()) == {"owls.md", "green-tea.txt", "water.txt", "bread.txt"}
    code, out = run("search", "swallow prey whole", "--mode", "sparse", "--json")
    assert code == 0 and json.loads(out)[0]["source"] == "owls.md"
    assert sync(s3)[1]["fetched"] == 0  # and it stays converged


def test_an_empty_listing_deletes_nothing_and_a_dead_endpoint_changes_nothing(
    s3: str, bucket: Any
) -> None:
    # An object whose name would land outside the download folder is refused, not fetched
    bucket.put_object(Bucket="notes", Key="team//tmp/escaped.txt", Body=b"Not here.")
    code, first = sync(s3)
    assert code == 0
    assert [(e["file"], e["code"]) for e in first["ingest"]["errors"]] == [
        ("/tmp/escaped.txt", "unreadable")
    ]
    assert not Path("/tmp/escaped.txt").exists()
    bucket.delete_object(Bucket="notes", Key="team//tmp/escaped.txt")
    before = stored()
    for key in ("team/owls.md", "team/drinks/coffee.txt", "team/tea.txt", "team/water.txt"):
        bucket.delete_object(Bucket="notes", Key=key)
    code, refused = sync(s3)  # a prefix listed empty: a mistake more likely than a wish
    assert code == 1 and refused["deleted"] == [] and "--force-delete" in refused["refused"]
    assert stored() == before

    code, out = run("sync", "s3://notes/team", "--endpoint", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot be listed whole" in out and "s3://notes/team/" in out
    assert stored() == before

    code, forced = sync(s3, "s3://notes/team", "--force-delete")
    assert code == 0 and len(forced["deleted"]) == 4 and stored() == {}


def test_a_backup_goes_to_a_bucket_and_restores_from_it(
    s3: str, tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    from ..servers import quarry_env
    from .test_backup import TEXTS, quarry

    boto3.client("s3", endpoint_url=s3).create_bucket(Bucket="backups")
    env = quarry_env(tmp_path / "data", minilm_path, redis_process.url) | {
        "AWS_ACCESS_KEY_ID": "quarry-test",
        "AWS_SECRET_ACCESS_KEY": "quarry-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3,
    }
    notes = tmp_path / "notes"
    notes.mkdir()
    for i, text in enumerate(TEXTS[:3]):
        (notes / f"t{i}.txt").write_text(text)
    assert quarry(env, "ingest", str(notes))[0] == 0
    code, out = quarry(env, "backup", "s3://backups/nightly/1", "--json")
    assert code == 0, out
    code, out = quarry(env, "backup", "s3://backups/nightly/1")
    assert code == 1 and "is not empty" in out
    code, out = quarry(env, "backup", "--verify", "s3://backups/nightly/1")
    assert code == 0 and "every file matches" in out, out

    fresh = env | {"QUARRY_DATA_DIR": str(tmp_path / "fresh")}
    code, out = quarry(fresh, "restore", "s3://backups/nightly/1")
    assert code == 0, out
    listed = {
        name: [
            (d["source"], d["doc_id"], d["chunks"])
            for d in json.loads(quarry(e, "docs", "list", "--json")[1])
        ]
        for name, e in (("original", env), ("restored", fresh))
    }
    assert listed["restored"] == listed["original"] and len(listed["original"]) == 3
    code, out = quarry(fresh, "restore", "s3://backups/nothing-here", "--force")
    assert code == 1 and "not a complete backup" in out
