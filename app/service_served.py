"""What a sync run inside the server writes through: the server's own upload path.

A source the server syncs on its schedule is ingested exactly as an upload is (staged
durably, versioned in acknowledgement order, queued to the server's consumers, originals
kept), never over HTTP back into itself and never beside the queue: `ingest` submits a job
to the server's job service from the run's thread and waits for it to end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.schemas import DocumentOut
from app.service import refused_upload
from app.service_local import report_of
from ingest.models import IngestReport
from ingest.pipeline import IngestObserver
from ingest.uploads import UploadRejected

if TYPE_CHECKING:
    from app.state import QuarryState


class ServedQuarry:
    """The `SyncTarget` of a run in the server process (called from a worker thread)."""

    def __init__(self, state: QuarryState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop

    def documents(self, collection: str) -> list[dict[str, Any]]:
        store = self.state.resources.store
        found = store.documents(collection) if store.recipe(collection) else []
        return [DocumentOut(**d.to_dict()).model_dump(mode="json") for d in found]

    def delete_document(self, collection: str, doc_id: str) -> int:
        return self.state.delete_document(collection, doc_id)

    def ingest(
        self,
        files: Sequence[tuple[Path, str]],
        *,
        collection: str,
        metadata: dict[str, Any],
        force: bool,
        observer: IngestObserver,
    ) -> IngestReport:
        report = IngestReport(files=len(files))
        started = time.perf_counter()
        s = self.state.settings
        try:
            with ExitStack() as stack:
                handles = [(key, stack.enter_context(p.open("rb"))) for p, key in files]
                upload = self.state.jobs.upload(
                    collection, metadata, int(s.max_file_mb * 1e6), list(handles), force=force
                )
                job, _ = asyncio.run_coroutine_threadsafe(upload, self.loop).result()
        except UploadRejected as exc:
            return refused_upload(exc, report, observer)
        while True:  # its files are worked by the server's consumers, as an upload's are
            seen = self.state.jobs.get(job.id)
            if seen is None or seen.finished:
                break
            time.sleep(0.5)
        report_of(seen or job, report)
        report.seconds = time.perf_counter() - started
        return report
