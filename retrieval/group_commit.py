"""One flush for every writer waiting on it: group commit, as databases do with their log.

A shard's flush makes its updates durable and costs ~10 ms whatever it carries (and holds
the GIL meanwhile). Files finishing together each need their own write on disk before they
are reported stored, not a flush each: a writer takes a ticket after its update and waits
until a flush that began after that update has ended; whoever finds no flush running starts
one for everyone waiting, after a short pause (`delay_s`) in which the writers finishing at
the same moment (the files of one model batch do) reach it too.

While the flush runs other Python threads mostly do not (qdrant-edge holds the GIL for
most of it: ~11 of a 16 ms flush here, 3.4 ms of it CPU), so files finishing one after
another, as a served upload's do, would spend the process in flushes: a flush starts at
most `spacing` times its own cost after the last one began (at most `max_gap_s`), and the
writers arriving meanwhile share it. The spacing weighs the GIL the flushes hold against
the time a file's slot waits for its flush: on a 2-core machine, a served upload of 1,000
abstracts took 32-35 s spaced 20 times the cost, 30-31 s at 8 and 29-30 s at 4, 2 or 1
(docs/benchmarks.md, "2026-12-03, sixth session").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class GroupCommit:
    """Tickets for updates, and flushes shared by the writers waiting for them."""

    def __init__(self, delay_s: float = 0.02, spacing: float = 4.0, max_gap_s: float = 0.5) -> None:
        self.delay_s = delay_s
        self.spacing = spacing
        self.max_gap_s = max_gap_s
        self.flushes = 0
        self._last_start = 0.0  # when the last flush began (monotonic)
        self._last_cost = 0.0  # and how long it took
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
                    time.sleep(self._pause())
                    with self._cond:
                        goal = self._written
                    self._last_start = time.monotonic()
                    flush()
                    self._last_cost = time.monotonic() - self._last_start
                    done = True
                finally:
                    self._cond.acquire()
                    self._flushing = False
                    if done:
                        self._flushed = max(self._flushed, goal)
                        self.flushes += 1
                    self._cond.notify_all()

    def _pause(self) -> float:
        """How long the next flush waits for company: `delay_s`, or longer while the last
        flush, by its cost, was too recent."""
        gap = min(self.max_gap_s, self.spacing * self._last_cost)
        return max(self.delay_s, self._last_start + gap - time.monotonic())
