"""One flush for every writer waiting on it: group commit, as databases do with their log.

A shard's flush makes its updates durable and costs ~10 ms whatever it carries (and holds
the GIL meanwhile). Files finishing together each need their own write on disk before they
are reported stored, not a flush each: a writer takes a ticket after its update and waits
until a flush that began after that update has ended; whoever finds no flush running starts
one for everyone waiting, after a short pause (`delay_s`) in which the writers finishing at
the same moment (the files of one model batch do) reach it too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class GroupCommit:
    """Tickets for updates, and flushes shared by the writers waiting for them."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.flushes = 0
        self._cond = threading.Condition()
        self._written = 0  # tickets handed out: updates applied
        self._flushed = 0  # every ticket up to this one is on disk
        self._flushing = False

    def wrote(self) -> int:
        """A ticket for an update that has just been applied."""
        with self._cond:
            self._written += 1
            return self._written

    def wait(self, ticket: int, flush: Callable[[], None]) -> None:
        """Return once update `ticket` is on disk, calling `flush` when no flush that
        covers it is running. A failed flush raises in its caller; the others try again."""
        with self._cond:
            while self._flushed < ticket:
                if self._flushing:
                    self._cond.wait()
                    continue
                self._flushing = True
                self._cond.release()
                done = False
                try:
                    time.sleep(self.delay_s)
                    with self._cond:
                        goal = self._written
                    flush()
                    done = True
                finally:
                    self._cond.acquire()
                    self._flushing = False
                    if done:
                        self._flushed = max(self._flushed, goal)
                        self.flushes += 1
                    self._cond.notify_all()
