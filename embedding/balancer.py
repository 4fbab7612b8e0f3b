"""Client-side balancing over embedding servers, as a production load balancer does it.

Least outstanding requests with a bound per server; active health checks; passive
ejection after consecutive failures; an ejected server comes back on probation (one
request at a time) once a probe succeeds, and is trusted again after a real request does.

Overload is never turned into unavailability (Envoy's outlier detection): slowness alone
(timeouts) ejects at most `max_ejection_share` of the servers and never the last one in
service, and with no server in service (or fewer than `panic_share` of them) the balancer
is in panic: it sends to every server it can still reach, ejected or not, instead of
refusing the work.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import httpx

from embedding.priority import Priority

log = logging.getLogger(__name__)


class ServerState(StrEnum):
    UP = "up"
    PROBATION = "probation"  # admitted, one request at a time, until one succeeds
    EJECTED = "ejected"


@dataclass(frozen=True)
class ServerSnapshot:
    """One server as `/readyz`, `/metrics` and the UI show it."""

    url: str
    state: ServerState
    in_flight: int
    requests: int
    errors: int
    ejections: int
    reason: str | None


class RequestObserver(Protocol):
    def request_done(self, server: str, seconds: float, ok: bool) -> None: ...


class Backend:
    """One server's live state; only the `Balancer` changes it, under its lock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.root = url.removesuffix("/v1")
        self.state = ServerState.PROBATION
        self.in_flight = 0
        self.requests = 0
        self.errors = 0
        self.ejections = 0
        self.failures = 0  # consecutive failed requests
        self.failed_probes = 0  # consecutive failed health checks
        self.unreachable = False  # its last failure: no connection at all
        self.reason: str | None = "not checked yet"
        self.health_path: str | None = None

    def snapshot(self) -> ServerSnapshot:
        return ServerSnapshot(
            self.url,
            self.state,
            self.in_flight,
            self.requests,
            self.errors,
            self.ejections,
            self.reason,
        )


class Balancer:
    """Hands out servers, least outstanding requests first, and learns from the answers."""

    def __init__(
        self,
        urls: Iterable[str],
        *,
        max_in_flight: int = 4,
        eject_after: int = 3,
        observer: RequestObserver | None = None,
        max_ejection_share: float = 0.5,
        panic_share: float = 0.0,
    ) -> None:
        self.backends = [Backend(url) for url in urls]
        if not self.backends:
            raise ValueError("no embedding server URLs")
        self.max_in_flight = max_in_flight
        self.eject_after = eject_after
        self.max_ejection_share = max_ejection_share
        self.panic_share = panic_share
        self.observer = observer
        self._cond = threading.Condition()
        self._turn = 0

    def _limit(self, backend: Backend, priority: Priority) -> int:
        if backend.state is ServerState.PROBATION:
            return 1
        # A query may use one slot more than ingestion, so it never queues behind a bulk load.
        return self.max_in_flight + (1 if priority is Priority.QUERY else 0)

    def _in_service(self) -> list[Backend]:
        return [b for b in self.backends if b.state is not ServerState.EJECTED]

    def panicking(self) -> bool:
        """Too few servers in service to trust the ejections (none, by default; Envoy's
        panic threshold when `panic_share` is set): use every reachable one."""
        serving = len(self._in_service())
        return serving == 0 or serving < self.panic_share * len(self.backends)

    def _candidates(self) -> list[Backend]:
        if not self.panicking():
            return self._in_service()
        # Panic: an ejected server that still answers is better than refusing the work.
        return [b for b in self.backends if b.state is not ServerState.EJECTED or not b.unreachable]

    def _choose(self, priority: Priority, avoid: set[str]) -> Backend | None:
        open_ = [b for b in self._candidates() if b.in_flight < self._limit(b, priority)]
        preferred = [b for b in open_ if b.url not in avoid] or open_
        if not preferred:
            return None
        count = len(self.backends)
        self._turn += 1
        # Ties go round-robin, so equal servers share the load evenly.
        return min(
            preferred,
            key=lambda b: (b.in_flight, (self.backends.index(b) - self._turn) % count),
        )

    def untried(self, tried: set[str]) -> bool:
        """Whether a server that may be sent work now is not among `tried`."""
        with self._cond:
            return any(b.url not in tried for b in self._candidates())

    def all_ejected(self) -> bool:
        """No server can be sent anything: all out, and none reachable even in panic."""
        with self._cond:
            return not self._candidates()

    def acquire(self, priority: Priority, avoid: set[str], timeout: float) -> Backend | None:
        """A server with a free slot (one not in `avoid` if any), or None when every server
        is ejected, or none frees a slot within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if not self._candidates():
                    return None
                chosen = self._choose(priority, avoid)
                if chosen is not None:
                    chosen.in_flight += 1
                    return chosen
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def wait_for_admission(self, timeout: float) -> None:
        """Sleep until some server is admitted again, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._candidates():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def release(
        self,
        backend: Backend,
        seconds: float,
        *,
        ok: bool,
        reason: str | None = None,
        kind: str = "error",
    ) -> None:
        """Return `backend`'s slot; `ok` says whether the server itself worked; `kind` how
        it failed: `slow` (a timeout), `down` (no connection) or `error` (a 5xx, garbage)."""
        with self._cond:
            backend.in_flight -= 1
            backend.requests += 1
            if ok:
                backend.failures, backend.unreachable = 0, False
                if backend.state is not ServerState.UP:
                    backend.state, backend.reason = ServerState.UP, None
                    log.info("embedding server %s is back in service", backend.url)
            else:
                backend.errors += 1
                backend.failures += 1
                backend.unreachable = kind == "down"
                if backend.state is ServerState.EJECTED:
                    backend.reason = reason or backend.reason  # an in-flight straggler
                elif backend.state is ServerState.PROBATION or backend.failures >= self.eject_after:
                    if kind == "slow" and not self._may_eject_for_slowness():
                        backend.reason = f"slow, kept in service: {reason or 'timed out'}"
                    else:
                        self._eject(backend, reason or "requests failed")
            self._cond.notify_all()
        if self.observer is not None:
            self.observer.request_done(backend.url, seconds, ok)

    def probed(self, backend: Backend, ok: bool, reason: str | None) -> None:
        """Record an active health check's result.

        A server in service goes out after two failed checks in a row, not one: behind a
        single URL (a Kubernetes Service, nginx) one check meets one replica, and one bad
        replica must not take the whole address out.
        """
        with self._cond:
            backend.failed_probes = 0 if ok else backend.failed_probes + 1
            if not ok and reason and "cannot connect" in reason:
                backend.unreachable = True
            elif ok:
                backend.unreachable = False
            if ok and backend.state is not ServerState.UP:
                if backend.state is ServerState.EJECTED:
                    log.info("embedding server %s passed its health check", backend.url)
                backend.state, backend.failures = ServerState.PROBATION, 0
                backend.reason = "health check passed; on probation until a request succeeds"
            elif not ok and (
                backend.state is ServerState.PROBATION
                or (backend.state is ServerState.UP and backend.failed_probes >= 2)
            ):
                self._eject(backend, reason or "health check failed")
            else:  # up and passing, up with one miss, or out and still failing
                backend.reason = None if ok else reason
            self._cond.notify_all()

    def _may_eject_for_slowness(self) -> bool:
        """Slowness alone takes out at most `max_ejection_share` of the servers (at least
        one may go), and never the last one in service."""
        out = len(self.backends) - len(self._in_service())
        allowed = max(1, int(self.max_ejection_share * len(self.backends)))
        return out + 1 <= allowed and len(self._in_service()) > 1

    def _eject(self, backend: Backend, reason: str) -> None:
        backend.state, backend.reason = ServerState.EJECTED, reason
        backend.ejections += 1
        log.warning("embedding server %s taken out of service: %s", backend.url, reason)

    def snapshot(self) -> list[ServerSnapshot]:
        with self._cond:
            return [b.snapshot() for b in self.backends]

    def out_of_service(self) -> str:
        """Why each ejected server is out, for error messages."""
        return "; ".join(
            f"{s.url}: {s.reason}" for s in self.snapshot() if s.state is ServerState.EJECTED
        )


def describe(exc: BaseException) -> str:
    """A short reason for a failed HTTP exchange."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})"
    return f"{type(exc).__name__}: {exc}"


class HealthChecker:
    """Probes every server every `interval` seconds: `/readyz` (Quarry), else `/health`."""

    def __init__(
        self,
        balancer: Balancer,
        client: Callable[[], httpx.Client],
        *,
        interval: float = 5.0,
        timeout: float = 2.0,
    ) -> None:
        self.balancer = balancer
        self._client = client
        self.interval = interval
        self.timeout = timeout
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(len(balancer.backends), thread_name_prefix="health")
        self._thread = threading.Thread(target=self._loop, name="health-checks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.check_all()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def check_all(self) -> None:
        """Probe every server at once (a hung one costs `timeout`, not a round's worth)."""
        with contextlib.suppress(RuntimeError):  # shut down meanwhile
            list(self._pool.map(self._probe, self.balancer.backends))

    def _probe(self, backend: Backend) -> None:
        paths = [backend.health_path] if backend.health_path else ["/readyz", "/health"]
        reason = "no health endpoint answered"
        for path in paths:
            try:
                response = self._client().get(backend.root + path, timeout=self.timeout)
            except httpx.HTTPError as exc:
                if not self._stop.is_set():  # not the client closing under a probe
                    self.balancer.probed(backend, False, f"health check {describe(exc)}")
                return
            if response.status_code == 404 and backend.health_path is None:
                continue
            backend.health_path = path
            if response.status_code == 200:
                self.balancer.probed(backend, True, None)
                return
            reason = f"{path} answered {response.status_code}: {response.text[:200]}"
            break
        self.balancer.probed(backend, False, reason)
