"""The balancer's choices: least outstanding, bounded slots, ejection and probation."""

from __future__ import annotations

import threading
import time

from embedding.balancer import Balancer, ServerState
from embedding.priority import Priority

URLS = ["http://a/v1", "http://b/v1", "http://c/v1"]


def trusted(**kwargs: int) -> Balancer:
    """A balancer whose servers have each answered one request already."""
    balancer = Balancer(URLS, **kwargs)
    for backend in balancer.backends:
        balancer.probed(backend, True, None)
        taken = balancer.acquire(Priority.BULK, set(), 0)
        assert taken is not None
        balancer.release(taken, 0.01, ok=True)
    assert {s.state for s in balancer.snapshot()} == {ServerState.UP}
    return balancer


def test_least_outstanding_requests_wins_and_ties_rotate() -> None:
    balancer = trusted(max_in_flight=4)
    held = [balancer.acquire(Priority.BULK, set(), 0) for _ in range(6)]
    counts = {s.url: s.in_flight for s in balancer.snapshot()}
    assert counts == dict.fromkeys(URLS, 2), counts
    first = held[0]
    assert first is not None
    balancer.release(first, 0.01, ok=True)
    again = balancer.acquire(Priority.BULK, set(), 0)
    assert again is not None and again.url == first.url  # the least loaded one


def test_slots_are_bounded_and_a_query_has_one_more() -> None:
    balancer = trusted(max_in_flight=1)
    bulk = [balancer.acquire(Priority.BULK, set(), 0) for _ in range(3)]
    assert all(b is not None for b in bulk)
    assert balancer.acquire(Priority.BULK, set(), 0.05) is None  # all slots taken
    query = balancer.acquire(Priority.QUERY, set(), 0)
    assert query is not None


def test_a_waiting_request_gets_the_slot_freed_by_another() -> None:
    balancer = trusted(max_in_flight=1)
    held = [balancer.acquire(Priority.BULK, set(), 0) for _ in range(3)]
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(balancer.acquire(Priority.BULK, set(), 5)))
    waiter.start()
    time.sleep(0.1)
    assert not got
    assert held[1] is not None
    balancer.release(held[1], 0.01, ok=True)
    waiter.join(5)
    assert got and got[0] is held[1]


def test_consecutive_failures_eject_and_a_probe_puts_back_on_probation() -> None:
    balancer = trusted(eject_after=2)
    bad = balancer.backends[0]
    for _ in range(2):
        taken = balancer.acquire(Priority.BULK, {"http://b/v1", "http://c/v1"}, 0)
        assert taken is bad
        balancer.release(bad, 1.0, ok=False, reason="timed out")
    assert bad.state is ServerState.EJECTED and bad.reason == "timed out"
    assert balancer.out_of_service() == "http://a/v1: timed out"
    # Avoided or not, an ejected server gets nothing.
    picks = {balancer.acquire(Priority.BULK, set(), 0).url for _ in range(6)}  # type: ignore[union-attr]
    assert "http://a/v1" not in picks
    balancer.probed(bad, True, None)
    assert bad.state is ServerState.PROBATION
    # On probation: one request at a time; a failure ejects at once, a success trusts it.
    assert balancer._limit(bad, Priority.BULK) == 1
    balancer.release(bad, 0.1, ok=False, reason="still broken")
    assert bad.state is ServerState.EJECTED and bad.ejections == 2


def test_every_server_out_means_no_server_and_a_reason() -> None:
    balancer = Balancer(URLS[:2])
    for backend in balancer.backends:
        balancer.probed(backend, False, "health check cannot connect")
    assert balancer.all_ejected()
    assert balancer.acquire(Priority.QUERY, set(), 1) is None
    assert balancer.out_of_service().count("cannot connect") == 2


def test_a_server_in_service_needs_two_failed_checks_in_a_row_to_go_out() -> None:
    balancer = trusted()
    backend = balancer.backends[0]
    balancer.probed(backend, False, "health check timed out")
    assert backend.state is ServerState.UP  # one replica behind one URL may be the bad one
    balancer.probed(backend, True, None)
    balancer.probed(backend, False, "health check timed out")
    assert backend.state is ServerState.UP  # not in a row
    balancer.probed(backend, False, "health check timed out")
    assert backend.state is ServerState.EJECTED and backend.reason == "health check timed out"


def test_slowness_alone_never_ejects_the_last_servers() -> None:
    """Overload is not unavailability: timeouts eject at most half the servers, never the
    last one in service."""
    balancer = trusted(eject_after=1)
    a, b, c = balancer.backends
    for backend in (a, b, c):
        held = balancer.acquire(Priority.BULK, {x.url for x in (a, b, c)} - {backend.url}, 0)
        assert held is backend
        balancer.release(backend, 60.0, ok=False, reason="timed out", kind="slow")
    states = [x.state for x in (a, b, c)]
    assert states.count(ServerState.EJECTED) == 1  # max(1, 50 % of 3)
    kept = [x for x in (a, b, c) if x.state is ServerState.UP]
    assert all("slow, kept in service" in (x.reason or "") for x in kept)
    assert balancer.acquire(Priority.BULK, set(), 0) is not None


def test_below_the_panic_share_every_reachable_server_gets_work() -> None:
    balancer = trusted(eject_after=1)
    a, b, c = balancer.backends
    for backend in (a, b):  # refused connections: really down
        balancer.release(
            balancer.acquire(Priority.BULK, {x.url for x in (a, b, c)} - {backend.url}, 0),  # type: ignore[arg-type]
            0.01,
            ok=False,
            reason="cannot connect",
            kind="down",
        )
    balancer.release(  # and c errs once: out too, but it answers
        balancer.acquire(Priority.BULK, set(), 0),  # type: ignore[arg-type]
        0.5,
        ok=False,
        reason="answered 503",
        kind="error",
    )
    assert all(x.state is ServerState.EJECTED for x in (a, b, c))
    assert balancer.panicking() and not balancer.all_ejected()
    chosen = balancer.acquire(Priority.BULK, set(), 0)
    assert chosen is c  # the reachable one, not refused
    balancer.release(c, 0.1, ok=True)
    assert c.state is ServerState.UP
