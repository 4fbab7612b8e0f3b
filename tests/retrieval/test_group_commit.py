"""Group commit: every writer's update is on disk when it returns, with flushes shared."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from retrieval.group_commit import GroupCommit


def test_writers_finishing_together_share_flushes_and_each_is_covered() -> None:
    commit = GroupCommit(delay_s=0.02)
    applied: list[int] = []  # tickets applied, in order
    durable: list[int] = []  # the highest ticket on disk after each flush
    lock = threading.Lock()

    def flush() -> None:
        with lock:
            durable.append(max(applied, default=0))
        time.sleep(0.01)

    def writer() -> None:
        with lock:
            ticket = commit.wrote()
            applied.append(ticket)
        commit.wait(ticket, flush)
        with lock:  # when wait returns, a flush that began after this update has ended
            assert any(mark >= ticket for mark in durable)

    threads = [threading.Thread(target=writer) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(applied) == list(range(1, 41))
    assert 1 <= commit.flushes < 40  # shared: fewer flushes than writers


def test_a_failed_flush_raises_for_its_leader_and_the_next_writer_flushes_again() -> None:
    commit = GroupCommit(delay_s=0)
    calls = []

    def failing() -> None:
        calls.append("fail")
        raise OSError("disk full")

    ticket = commit.wrote()
    with pytest.raises(OSError):
        commit.wait(ticket, failing)
    commit.wait(ticket, lambda: calls.append("ok"))  # not yet on disk: flushed again
    assert calls == ["fail", "ok"] and commit.flushes == 1


def test_flushes_are_spaced_by_their_cost_while_writers_keep_coming() -> None:
    """Files finishing one after another share flushes: a flush (which holds the GIL in
    qdrant-edge) begins no sooner than `spacing` times the last one's cost after it."""
    commit = GroupCommit(delay_s=0.001, spacing=10.0, max_gap_s=1.0)
    spans: list[tuple[float, float]] = []

    def flush() -> None:
        started = time.monotonic()
        time.sleep(0.01)
        spans.append((started, time.monotonic()))

    def writer() -> None:
        commit.wait(commit.wrote(), flush)

    threads = []
    for _ in range(30):  # a writer every 10 ms for 300 ms
        threads.append(threading.Thread(target=writer))
        threads[-1].start()
        time.sleep(0.01)
    for thread in threads:
        thread.join()
    assert commit.flushes == len(spans) < 10  # a flush per writer would be 30
    for (start, end), (next_start, _) in itertools.pairwise(spans):
        assert next_start - start >= 10.0 * (end - start) - 0.002
