"""Named points where an operator or a test can make ingestion pause.

`QUARRY_FAILPOINTS="after_upsert=sleep:30"` holds the pipeline for 30 s once its upsert is
done and before the old version is pruned, so that a crash test can SIGKILL a real server at
that exact stage (as etcd's gofail does); `handoff_requeue=kill` makes the process SIGKILL
itself there, in the middle of a hand-off. Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger(__name__)

POINTS = (
    "parsing",
    "embedding",
    "after_upsert",
    "after_prune",
    "after_claim",  # a worker took a file, before any work on it
    "handoff_after_takeover",  # a dead holder's file is back to queued, not yet re-queued
    "handoff_requeue",  # its stale queue record is ended, the new one not yet written
    "sync_before_delete",  # a sync run has ingested, not yet deleted the files gone
    "sync_between_deletes",  # a sync run has deleted one gone file's documents
    "migrate_document",  # a migration has moved one document into the new collection
    "migrate_before_swap",  # a migration has built the new collection, not swapped it in
    "migrate_after_swap",  # the new collection is live; the catch-up not yet run
)
KILL = -1.0


def _parse(spec: str) -> dict[str, float]:
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        kind, _, seconds = action.partition(":")
        if name in POINTS and kind == "sleep":
            points[name] = float(seconds or 0)
        elif name in POINTS and kind == "kill":
            points[name] = KILL
    return points


def failpoint(name: str) -> None:
    seconds = _parse(os.environ.get("QUARRY_FAILPOINTS", "")).get(name)
    if seconds == KILL:
        log.warning("failpoint %s: killing this process", name)
        os.kill(os.getpid(), signal.SIGKILL)
    if seconds:
        log.warning("failpoint %s: pausing %.1f s", name, seconds)
        time.sleep(seconds)
