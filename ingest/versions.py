"""Source versions: numbers that grow in the order Quarry acknowledged the uploads.

Every accepted upload of a source (and every re-ingest) takes the next number from one
counter kept in the data dir, under a lock shared by every process (and every API replica
on a shared volume), before the upload is acknowledged. The number goes into the job and
into each stored chunk (`seq`), so whatever order workers finish in, the newest
acknowledged version of a source is the one that stays (`IngestPipeline`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from filelock import FileLock


class VersionCounter:
    """A durable counter: `take(n)` reserves n new numbers, larger than any given before."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "source-versions"

    def take(self, count: int = 1) -> int:
        """Reserve `count` numbers; returns the first (they run first..first+count-1)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock", timeout=60):
            try:
                last = int(self.path.read_text(encoding="utf-8").strip() or 0)
            except (OSError, ValueError):
                last = 0
            # Never below the clock (in µs): a counter file lost or restored from an older
            # backup still hands out numbers above every version stored meanwhile.
            first = max(last + 1, int(time.time() * 1_000_000))
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            with tmp.open("w", encoding="utf-8") as handle:
                handle.write(str(first + count - 1))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            return first
