"""Prometheus metrics: request latency per route, model and cache work, queues and jobs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedding.balancer import ServerSnapshot, ServerState
from embedding.cache import CacheStats
from embedding.model_inputs import ModelStats
from ingest.job_queue import QueueSnapshot
from ingest.jobs import TERMINAL_STATES

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class DataDirSpace:
    """The data dir's filesystem: free and total bytes, and the floor uploads stop at."""

    free_bytes: int
    size_bytes: int
    floor_bytes: int


@dataclass
class LiveSources:
    """Where the scrape-time figures come from (read when /metrics is scraped)."""

    model_stats: Callable[[], ModelStats | None]
    cache_stats: Callable[[], CacheStats]
    queue_depth: Callable[[], int]
    jobs_finished: Callable[[], dict[str, int]]
    batch_depth: Callable[[], dict[str, int]]
    servers: Callable[[], list[ServerSnapshot]]
    ingest_queue: Callable[[], QueueSnapshot | None] = lambda: None
    # (/readyz's status, each check's ok): scraped, so an alert sees readiness go.
    readiness: Callable[[], tuple[str, dict[str, bool]] | None] = lambda: None
    data_dir: Callable[[], DataDirSpace | None] = lambda: None


class _LiveCollector(Collector):
    def __init__(self, sources: LiveSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        stats = self.sources.model_stats() or ModelStats()
        for name, value, doc in (
            ("quarry_embedding_batches", stats.batches, "model forward batches"),
            ("quarry_embedding_texts", stats.texts, "texts embedded by the model"),
            ("quarry_embedding_tokens", stats.tokens, "tokens embedded by the model"),
            (
                "quarry_embedding_seconds",
                stats.seconds,
                "seconds spent in the model, every lane's added up",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        cache = self.sources.cache_stats()
        for name, value, doc in (
            ("quarry_cache_hits", cache.hits, "embedding cache hits"),
            ("quarry_cache_misses", cache.misses, "embedding cache misses"),
            ("quarry_cache_errors", cache.errors, "embedding cache failures (Redis down)"),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "quarry_ingest_queue_depth",
            "ingestion jobs queued or running",
            value=self.sources.queue_depth(),
        )
        waiting = GaugeMetricFamily(
            "quarry_batch_queue_depth", "items waiting for a model batch", labels=["batcher"]
        )
        for batcher, depth in self.sources.batch_depth().items():
            waiting.add_metric([batcher], depth)
        yield waiting
        yield from _server_metrics(self.sources.servers())
        yield from _queue_metrics(self.sources.ingest_queue())
        yield from _health_metrics(self.sources.readiness(), self.sources.data_dir())
        yield from _gpu_metrics()
        jobs = CounterMetricFamily(
            "quarry_jobs_finished", "ingestion jobs finished, by final state", labels=["state"]
        )
        finished = dict.fromkeys(TERMINAL_STATES, 0) | self.sources.jobs_finished()
        for state, count in sorted(finished.items()):  # every state from the start: 0s too
            jobs.add_metric([state], count)
        yield jobs


def _queue_metrics(queue: QueueSnapshot | None) -> Iterator[Metric]:
    """The file queue the workers take from (as of the last reconciler pass)."""
    if queue is None:
        return
    yield GaugeMetricFamily(
        "quarry_ingest_queue_reachable", "1 if the queue's Redis answered", value=queue.reachable
    )
    yield GaugeMetricFamily(
        "quarry_ingest_files_queued", "files waiting for a worker", value=queue.queued
    )
    yield GaugeMetricFamily(
        "quarry_ingest_files_scheduled",
        "files waiting out a retry's back-off",
        value=queue.scheduled,
    )
    yield GaugeMetricFamily(
        "quarry_ingest_workers", "workers taking files from the queue", value=queue.workers
    )
    in_flight = GaugeMetricFamily(
        "quarry_ingest_files_in_flight", "files a worker is processing", labels=["worker"]
    )
    for worker, count in sorted(queue.in_flight.items()):
        in_flight.add_metric([worker], count)
    yield in_flight
    yield CounterMetricFamily(
        "quarry_ingest_retries", "deliveries of a file after its first", value=queue.retries
    )
    yield CounterMetricFamily(
        "quarry_ingest_handoffs",
        "files taken back from a worker that died (or hung) holding them, and handed on",
        value=queue.handoffs,
    )
    yield CounterMetricFamily(
        "quarry_ingest_dead_letters",
        "files given up on (their workers kept dying, or the queue's retries ran out)",
        value=queue.dead_letters,
    )


def _health_metrics(
    readiness: tuple[str, dict[str, bool]] | None, space: DataDirSpace | None
) -> Iterator[Metric]:
    """Readiness as /readyz answers it, and the room left in the data dir."""
    if readiness is not None:
        status, checks = readiness
        yield GaugeMetricFamily(
            "quarry_ready",
            "1 while /readyz answers 200 (ready or degraded), 0 while it answers 503",
            value=status != "not_ready",
        )
        ok = GaugeMetricFamily(
            "quarry_readiness_check_ok", "1 if the /readyz check passes", labels=["check"]
        )
        for check, passed in sorted(checks.items()):
            ok.add_metric([check], passed)
        yield ok
    if space is not None:
        for name, value, doc in (
            ("quarry_data_dir_free_bytes", space.free_bytes, "free bytes on the data dir's disk"),
            ("quarry_data_dir_size_bytes", space.size_bytes, "size of the data dir's disk"),
            (
                "quarry_data_dir_min_free_bytes",
                space.floor_bytes,
                "QUARRY_MIN_FREE_MB: uploads get 507 below it, /readyz degrades below twice it",
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


def _gpu_metrics() -> Iterator[Metric]:
    """CUDA memory of the process's model, once torch has a CUDA context (never makes one)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return
    labels = ["device"]
    allocated = GaugeMetricFamily(
        "quarry_gpu_memory_allocated_bytes", "CUDA memory held by tensors", labels=labels
    )
    reserved = GaugeMetricFamily(
        "quarry_gpu_memory_reserved_bytes", "CUDA memory held by torch's allocator", labels=labels
    )
    total = GaugeMetricFamily("quarry_gpu_memory_total_bytes", "the GPU's memory", labels=labels)
    for index in range(torch.cuda.device_count()):
        device = str(index)
        allocated.add_metric([device], torch.cuda.memory_allocated(index))
        reserved.add_metric([device], torch.cuda.memory_reserved(index))
        total.add_metric([device], torch.cuda.get_device_properties(index).total_memory)
    yield from (allocated, reserved, total)


def _server_metrics(servers: list[ServerSnapshot]) -> Iterator[Metric]:
    """Per remote embedding server: its state, load, and what it has done so far."""
    labels = ["server"]
    up = GaugeMetricFamily(
        "quarry_embedding_server_up", "1 if the server is in service", labels=labels
    )
    in_flight = GaugeMetricFamily(
        "quarry_embedding_server_in_flight", "requests outstanding", labels=labels
    )
    requests = CounterMetricFamily(
        "quarry_embedding_server_requests", "requests answered or failed", labels=labels
    )
    errors = CounterMetricFamily("quarry_embedding_server_errors", "failed requests", labels=labels)
    ejections = CounterMetricFamily(
        "quarry_embedding_server_ejections", "times taken out of service", labels=labels
    )
    for server in servers:
        up.add_metric([server.url], 0 if server.state is ServerState.EJECTED else 1)
        in_flight.add_metric([server.url], server.in_flight)
        requests.add_metric([server.url], server.requests)
        errors.add_metric([server.url], server.errors)
        ejections.add_metric([server.url], server.ejections)
    yield from (up, in_flight, requests, errors, ejections)


class Metrics:
    """One registry per app, so several apps (tests) never share or clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "quarry_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "quarry_microbatch_size",
            "texts per merged model call",
            ["batcher"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "quarry_microbatch_requests",
            "requests merged into one model call",
            ["batcher"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.server_latency = Histogram(
            "quarry_embedding_server_request_seconds",
            "latency of requests to remote embedding servers",
            ["server", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "quarry_http_requests_in_flight",
            "API requests being served (the autoscalers' load signal)",
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "quarry_job_duration_seconds",
            "ingestion job duration by final state",
            ["state"],
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
            registry=self.registry,
        )

    def request_done(self, server: str, seconds: float, ok: bool) -> None:
        """A remote embedding request ended (the balancer's observer)."""
        self.server_latency.labels(server, "ok" if ok else "error").observe(seconds)

    def watch(self, sources: LiveSources) -> None:
        self.registry.register(_LiveCollector(sources))

    def batch_observer(self, batcher: str) -> Callable[[int, int], None]:
        def observe(requests: int, items: int) -> None:
            self.batch_requests.labels(batcher).observe(requests)
            self.batch_size.labels(batcher).observe(items)

        return observe


class RequestTimer:
    """Pure ASGI middleware timing every HTTP request under its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        counted = scope["path"].startswith("/v1/")
        if counted:
            self.metrics.in_flight.inc()

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            if counted:
                self.metrics.in_flight.dec()
            # The route template ("/v1/documents/{doc_id}"): bounded label values.
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], path, str(status)).observe(
                time.perf_counter() - started
            )
