"""One delivery of one file: idempotent under redelivery, and a file that kills its workers
becomes a dead letter instead of killing more."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import pytest

from app.resources import Resources
from app.settings import Settings
from ingest.file_worker import MAX_LOST, FileTracker, FileWorker, RetryLater
from ingest.jobs import FileJobStore, Job
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
    entry.status, entry.worker, entry.lost, entry.version = "parsing", "dead", MAX_LOST - 1, 5
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
