"""`quarry sync FOLDER --watch`: the folder followed as it changes.

After the first run, every batch of file events (watchfiles: the operating system's own
notifications, debounced so that an editor's save or a copy of many files is one batch)
starts another run. A run is the same whole-folder sync as ever (it lists, compares and
converges), so an event missed or coalesced never leaves the collection behind for longer
than the next event; events that arrive during a run start one more after it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

log = logging.getLogger(__name__)

DEBOUNCE_MS = 1000  # events this close together are one batch (one run)


def follow(
    folder: Path,
    run: Callable[[], None],
    stop: threading.Event | None = None,
    debounce_ms: int = DEBOUNCE_MS,
) -> None:
    """Run `run` once the folder is watched, then after every batch of changes under it,
    until `stop` is set (or Ctrl-C). The watcher is started before the first run and
    collects events while a run goes on, so a change made meanwhile is never missed."""
    first = True
    for changes in watchfiles.watch(
        folder,
        debounce=debounce_ms,
        stop_event=stop,
        raise_interrupt=False,
        rust_timeout=1000,
        yield_on_timeout=True,  # (an empty batch after a second: the watcher is running)
        watch_filter=lambda change, path: not Path(path).name.startswith("."),
    ):
        if changes or first:
            if changes:
                log.info("%d change(s) under %s: syncing", len(changes), folder)
            first = False
            run()
