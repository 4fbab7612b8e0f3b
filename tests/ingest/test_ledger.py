"""The failure ledger, written by many workers at once, keeps every writer's entries."""

from __future__ import annotations

import threading
from pathlib import Path

from ingest.ledger import FailureLedger
from ingest.models import FileError


def test_concurrent_writers_each_keep_their_entries(tmp_path: Path) -> None:
    path = tmp_path / "failures" / "c.json"
    ledgers = [FailureLedger(path) for _ in range(8)]  # each loaded before any saved

    def fail(i: int) -> None:
        ledgers[i].record(f"doc{i}", FileError(f"f{i}.pdf", "encrypted", f"f{i}.pdf: locked"))
        ledgers[i].save()

    threads = [threading.Thread(target=fail, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fresh = FailureLedger(path)
    for i in range(8):
        found = fresh.get(f"doc{i}", f"f{i}.pdf")
        assert (
            found is not None and found.code == "encrypted" and found.message == f"f{i}.pdf: locked"
        )
    assert not list(path.parent.glob("*.tmp"))
