"""The job state store and upload staging."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedding.errors import QuarryError
from ingest.job_store import FileJobStore
from ingest.jobs import FileProgress, Job
from ingest.uploads import clean_filename, load_manifest, stage_upload


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[FileJobStore]:
    yield FileJobStore(tmp_path / "jobs")


def _job(job_id: str, created: float) -> Job:
    files = [FileProgress("a.txt", 10, "00000.txt"), FileProgress("b.pdf", 20, "00001.pdf")]
    return Job(job_id, "docs", files, {"team": "x"}, created_at=created)


def test_jobs_round_trip_and_list_newest_first(store: FileJobStore) -> None:
    assert store.get("missing") is None and store.recent(5) == []
    first, second = _job("j1", 100.0), _job("j2", 200.0)
    store.save(first)
    store.save(second)
    first.files[0].stored, first.files[0].status = 7, "embedding"
    store.save(first)
    loaded = store.get("j1")
    assert loaded is not None and loaded.state == "running" and loaded.files[0].stored == 7
    assert loaded.metadata == {"team": "x"} and loaded.files[1].name == "b.pdf"
    assert [job.id for job in store.recent(5)] == ["j2", "j1"]
    assert [job.id for job in store.recent(1)] == ["j2"]


def test_a_files_progress_file_wins_over_the_jobs_record_only_when_newer(
    store: FileJobStore,
) -> None:
    job = _job("j3", 300.0)
    store.save(job)
    worker_view = FileProgress("a.txt", 10, "00000.txt", status="parsing", worker="w1", version=2)
    store.save_file("j3", 0, worker_view)
    merged = store.get("j3")
    assert merged is not None and merged.files[0].worker == "w1" and merged.state == "running"
    job.files[0].reset()  # the API starts the file over (retry): its record is newer now
    job.files[0].version = 5
    store.save(job)
    again = store.get("j3")
    assert again is not None and again.files[0].status == "queued" and again.state == "queued"
    done = FileProgress("a.txt", 10, "00000.txt", status="ingested", version=6)
    store.save_file("j3", 0, done)
    store.save_file("j3", 1, FileProgress("b.pdf", 20, "00001.pdf", status="failed", version=1))
    settled = store.get("j3")
    assert settled is not None and [f.status for f in settled.files] == ["ingested", "failed"]
    assert settled.version > again.version  # event streams see every change


def test_progress_state_and_eta() -> None:
    job = _job("j", 0.0)
    job.state, job.started_at = "running", 1000.0
    job.files[0].status = "ingested"
    job.files[1].chunked, job.files[1].embedded = 10, 10
    progress = job.progress(now=1010.0)
    assert 0 < progress["fraction"] < 1 and progress["eta_s"] and progress["eta_s"] > 0
    job.files[1].status, job.files[1].error = "failed", {"code": "x", "message": "y"}
    job.settle()
    assert job.state == "partial" and job.progress()["eta_s"] == 0
    job.files[0].status = "failed"
    job.settle()
    assert job.state == "failed"


@pytest.mark.parametrize("name", ["", "   ", "x" * 1100 + ".txt"])
def test_empty_or_huge_names_are_refused(name: str) -> None:
    with pytest.raises(QuarryError) as caught:
        clean_filename(name)
    assert caught.value.code == "invalid_filename"


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../x.txt",
        "a/b.txt",
        "a\\b.txt",
        "bad\x00.txt",
        "line\nbreak.txt",
        "x" * 300 + ".txt",
        "Überblick 報告.txt",
    ],
)
def test_any_other_name_is_kept_as_given(name: str) -> None:
    assert clean_filename(name) == name


def test_staging_writes_files_under_job_ids_never_under_given_names(tmp_path: Path) -> None:
    job, rejected = stage_upload(
        tmp_path,
        "docs",
        {},
        1000,
        [
            ("notes.txt", io.BytesIO(b"hello")),
            ("../../x.txt", io.BytesIO(b"evil")),
            ("/etc/passwd\n.txt", io.BytesIO(b"odd")),
        ],
    )
    staged = sorted(p.name for p in (tmp_path / job.id / "files").iterdir())
    assert staged == ["00000.txt", "00001.txt", "00002.txt"]
    assert not (tmp_path.parent / "x.txt").exists() and rejected == []
    manifest = load_manifest(tmp_path / job.id)
    assert manifest is not None
    assert [f.name for f in manifest.files] == ["notes.txt", "../../x.txt", "/etc/passwd\n.txt"]
    with pytest.raises(QuarryError) as caught:
        stage_upload(tmp_path, "docs", {}, 3, [("big.txt", io.BytesIO(b"toolong"))])
    assert caught.value.status == 413 and caught.value.code == "file_too_large"
    assert len(list(tmp_path.iterdir())) == 1  # the refused upload left nothing behind


def test_cached_reads_follow_every_rewrite_and_hand_out_copies(store: FileJobStore) -> None:
    job = Job("j3", "docs", [FileProgress(f"{i}.txt", 1, f"{i:05d}.txt") for i in range(50)])
    store.save(job)
    seen = store.view("j3")
    assert seen is not None and seen.state == "queued"
    for index in range(50):  # each rewrite is seen, however fast they follow one another
        entry = store.file(job, index)
        entry.status, entry.stored, entry.version = "ingested", index, entry.version + 1
        store.save_file("j3", index, entry)
        viewed = store.view("j3")
        assert viewed is not None and viewed.files[index].status == "ingested"
        assert viewed.files[index].stored == index
    time.sleep(0.1)  # writes this recent are read again (their stamps may repeat)
    assert store.view("j3") is store.view("j3")  # nothing rewritten: nothing rebuilt
    mine = store.file(store.record("j3") or job, 0)
    mine.status = "failed"  # a caller's copy: the store's own records do not change
    record = store.record("j3")
    assert record is not None and record.files[0].status == "queued"
    record.cancel_requested = True
    again = store.record("j3")
    assert again is not None and not again.cancel_requested
    job.cancel_requested = True
    store.save(job)
    now = store.record("j3")
    assert now is not None and now.cancel_requested


def test_concurrent_readers_never_leave_an_old_view_behind(store: FileJobStore) -> None:
    import threading

    job = Job("j4", "docs", [FileProgress(f"{i}.txt", 1, f"{i:05d}.txt") for i in range(20)])
    store.save(job)
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            store.view("j4")

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    for round_ in range(1, 6):
        for index in range(20):
            entry = store.file(job, index)
            entry.stored, entry.version = round_, entry.version + 1
            entry.status = "ingested" if round_ == 5 else "embedding"
            store.save_file("j4", index, entry)
    stop.set()
    for thread in readers:
        thread.join()
    time.sleep(0.1)
    final = store.view("j4")
    assert final is not None and {f.stored for f in final.files} == {5}
    assert {f.status for f in final.files} == {"ingested"}
