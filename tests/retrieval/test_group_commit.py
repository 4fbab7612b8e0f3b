"""Group commit: every writer's update is on disk when it returns, with flushes shared."""

from __future__ import annotations

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
