"""One delivery of one file: idempotent under redelivery, and a file that kills its workers
becomes a dead letter instead of killing more."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from app.resources import Resources
from app.settings import Settings
from ingest.file_worker import MAX_UNEXPECTED, FileTracker, FileWorker, RetryLater
from ingest.job_store import FileJobStore
from ingest.jobs import Job
from ingest.leases import MAX_LOST, Holder
from ingest.originals import Originals
from ingest.pipeline import IngestPipeline
from ingest.uploads import stage_upload

OWLS = "Barn owls hunt voles at night, hearing them under the snow."
TEA = "Green tea is steeped at eighty degrees for two minutes."


@pytest.fixture()
def resources(settings: Settings) -> Iterator[Resources]:
    built = Resources(settings)
    yield built
    built.close()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def staged_job(store: FileJobStore, *texts: str) -> Job:
    files = [(f"note-{i}.txt", io.BytesIO(text.encode())) for i, text in enumerate(texts)]
    job, _ = stage_upload(store.root, "notes", {}, 10_000, files)
    store.save(job)
    return job


def worker_for(resources: Resources, store: FileJobStore) -> FileWorker:
    def pipelines(collection: str, tracker: FileTracker, force: bool) -> IngestPipeline:
        return resources.pipeline(collection, tracker, force=force)

    return FileWorker(store, pipelines, Originals(resources.settings.originals_dir))


def test_a_redelivered_file_is_not_redone_and_the_last_file_settles_the_job(
    resources: Resources,
) -> None:
    store = FileJobStore(resources.settings.jobs_dir)
    job = staged_job(store, OWLS, TEA)
    files = worker_for(resources, store)
    never = threading.Event()
    assert files.process(job.id, 0, "w1", never) == "ingested"
    middle = store.get(job.id)
    assert middle is not None and middle.state == "running" and not middle.finished
    assert middle.files[0].worker == "w1" and middle.files[1].status == "queued"
    assert files.process(job.id, 0, "w2", never) == "ingested"  # at-least-once: no redo
    assert store.get(job.id).files[0].worker == "w1"  # type: ignore[union-attr]
    assert files.process(job.id, 1, "w2", never) == "ingested"
    ended = store.get(job.id)
    assert ended is not None and ended.state == "done"
    assert not (store.root / job.id / "files").exists()  # staging cleaned, originals kept
    assert files.process(job.id, 1, "w3", never) == "gone"
    assert resources.store.count("notes") == 2


def test_a_file_whose_workers_keep_dying_becomes_a_dead_letter(resources: Resources) -> None:
    store = FileJobStore(resources.settings.jobs_dir)
    job = staged_job(store, OWLS, TEA)
    entry = job.files[0]
    Holder(socket.gethostname(), dead_pid(), "dead").claim(entry, 60)
    entry.status, entry.lost, entry.version = "parsing", MAX_LOST - 1, 5
    store.save_file(job.id, 0, entry)  # as a worker SIGKILL'd mid-file leaves it
    files = worker_for(resources, store)
    assert files.process(job.id, 0, "w1", threading.Event()) == "dead_letter"
    failed = store.get(job.id).files[0]  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error["code"] == "worker_lost"  # type: ignore[index]
    assert failed.name in failed.error["message"]  # type: ignore[index]
    assert files.process(job.id, 1, "w1", threading.Event()) == "ingested"
    ended = store.get(job.id)
    assert ended is not None and ended.state == "partial"
    assert (store.root / job.id / "failed" / failed.staged).exists()  # kept for `retry`


def test_a_dependency_failure_is_retried_later_and_a_stop_hands_the_file_back(
    resources: Resources,
) -> None:
    store = FileJobStore(resources.settings.jobs_dir)
    job = staged_job(store, OWLS)

    def broken(collection: str, tracker: FileTracker, force: bool) -> IngestPipeline:
        raise ConnectionError("the store went away")

    with pytest.raises(RetryLater):
        FileWorker(store, broken, None).process(job.id, 0, "w1", threading.Event())
    entry = store.get(job.id).files[0]  # type: ignore[union-attr]
    assert entry.status == "retrying" and "store went away" in entry.error["message"]  # type: ignore[index]
    stopping = threading.Event()
    stopping.set()
    from ingest.models import Stopped

    with pytest.raises(Stopped):
        worker_for(resources, store).process(job.id, 0, "w2", stopping)
    handed = store.get(job.id).files[0]  # type: ignore[union-attr]
    assert handed.status == "queued" and handed.lost == 0  # not counted as a dead worker
    assert worker_for(resources, store).process(job.id, 0, "w3", threading.Event()) == "ingested"


def test_a_live_holder_keeps_its_file_even_when_its_lease_is_late(resources: Resources) -> None:
    """A loaded machine delays heartbeats: the file is neither redone nor given up."""
    store = FileJobStore(resources.settings.jobs_dir)
    job = staged_job(store, OWLS)
    entry = job.files[0]
    Holder(socket.gethostname(), os.getppid(), "busy").claim(entry, 60)
    entry.status, entry.lease_until, entry.version = "embedding", time.time() - 120, 5
    store.save_file(job.id, 0, entry)
    files = worker_for(resources, store)
    assert files.process(job.id, 0, "w2", threading.Event()) == "held"
    kept = store.get(job.id).files[0]  # type: ignore[union-attr]
    assert kept.status == "embedding" and kept.worker == "busy" and kept.lost == 0


def test_a_dead_holders_file_is_taken_over_and_counted_once(resources: Resources) -> None:
    store = FileJobStore(resources.settings.jobs_dir)
    job = staged_job(store, OWLS)
    entry = job.files[0]
    Holder(socket.gethostname(), dead_pid(), "gone").claim(entry, 600)  # lease still valid
    entry.status, entry.version = "parsing", 5
    store.save_file(job.id, 0, entry)
    assert worker_for(resources, store).process(job.id, 0, "w2", threading.Event()) == "ingested"
    done = store.get(job.id).files[0]  # type: ignore[union-attr]
    assert done.lost == 1 and done.worker == "w2" and done.attempts == 1
    assert not done.claim and not done.pid  # released once it ended


def test_an_unexpected_failure_ends_the_file_after_a_few_tries(resources: Resources) -> None:
    """A bug is a verdict, not an outage: the same error a few times fails the file with it."""
    store = FileJobStore(resources.settings.jobs_dir)
    job = staged_job(store, OWLS)

    def buggy(collection: str, tracker: FileTracker, force: bool) -> IngestPipeline:
        raise KeyError("chunk_count")

    worker = FileWorker(store, buggy, None)
    for _ in range(MAX_UNEXPECTED - 1):
        with pytest.raises(RetryLater):
            worker.process(job.id, 0, "w1", threading.Event())
    assert worker.process(job.id, 0, "w1", threading.Event()) == "failed"
    failed = store.get(job.id)
    assert failed is not None and failed.state == "failed"
    error = failed.files[0].error or {}
    assert error["code"] == "internal_error" and "chunk_count" in error["message"]


def test_a_dependency_outage_is_waited_out_however_often_it_fails(resources: Resources) -> None:
    store = FileJobStore(resources.settings.jobs_dir)
    job = staged_job(store, OWLS)

    def down(collection: str, tracker: FileTracker, force: bool) -> IngestPipeline:
        raise ConnectionRefusedError("the store is down")

    worker = FileWorker(store, down, None)
    for _ in range(3 * MAX_UNEXPECTED):
        with pytest.raises(RetryLater):
            worker.process(job.id, 0, "w1", threading.Event())
    waiting = store.get(job.id).files[0]  # type: ignore[union-attr]
    assert waiting.status == "retrying" and waiting.failures == 0


def test_a_claim_this_process_abandoned_is_taken_back_without_a_loss(
    resources: Resources,
) -> None:
    """An attempt that ended in an error even its hand-back could not record (a full disk)
    leaves this process's own claim behind: the next delivery here takes it back."""
    store = FileJobStore(resources.settings.jobs_dir)
    job = staged_job(store, OWLS)
    entry = job.files[0]
    Holder.me("earlier attempt").claim(entry, 600)
    entry.status, entry.version = "embedding", 5
    store.save_file(job.id, 0, entry)
    assert worker_for(resources, store).process(job.id, 0, "w1", threading.Event()) == "ingested"
    done = store.get(job.id).files[0]  # type: ignore[union-attr]
    assert done.lost == 0 and done.attempts == 1
