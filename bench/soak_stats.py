"""What a soak run measured, summed up: latency percentiles and outcomes per request kind,
p99 early against late, and the server's growth per hour after the warm-up."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    """One request as the locustfile recorded it (`--samples-out`)."""

    started: float  # epoch seconds
    kind: str
    status: int  # 0: no answer (connection refused or reset, timeout)
    ms: float
    ok: bool

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Request:
        started, kind, status, ms, ok = row
        return cls(float(started), str(kind), int(status), float(ms), bool(ok))


@dataclass(frozen=True)
class ServerSample:
    """The server's process tree and queues at one moment."""

    at: float  # seconds since the load began
    processes: int
    pss_mb: float
    fds: int
    open_files: int
    gauges: dict[str, float] = field(default_factory=dict)
    pss_mb_by_process: dict[str, float] = field(default_factory=dict)  # "pid command": MB


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def slope_per_hour(points: Iterable[tuple[float, float]]) -> float | None:
    """The least-squares slope of (seconds, value) points, per hour; None under 3 points."""
    pairs = list(points)
    if len(pairs) < 3:
        return None
    mean_t = sum(t for t, _ in pairs) / len(pairs)
    mean_v = sum(v for _, v in pairs) / len(pairs)
    spread = sum((t - mean_t) ** 2 for t, _ in pairs)
    if spread == 0:
        return None
    return 3600 * sum((t - mean_t) * (v - mean_v) for t, v in pairs) / spread


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def outcomes(requests: Sequence[Request], seconds: float, window_s: float) -> dict[str, Any]:
    """Counts by outcome, percentiles of the answered requests, throughput, and p99 in the
    first and the last `window_s` of the run."""
    answered = [r for r in requests if r.ok]
    throttled = sum(r.status == 429 for r in requests)
    server_errors = sum(r.status >= 500 for r in requests)
    other = len(requests) - len(answered) - throttled - server_errors
    start = min((r.started for r in requests), default=0.0)
    end = start + seconds
    first = [r.ms for r in answered if r.started < start + window_s]
    last = [r.ms for r in answered if r.started >= end - window_s]
    latencies = [r.ms for r in answered]
    return {
        "requests": len(requests),
        "ok": len(answered),
        "throttled_429": throttled,
        "server_errors_5xx": server_errors,
        "other_failures": other,
        "error_rate": round((server_errors + other) / len(requests), 4) if requests else 0.0,
        "per_s": round(len(answered) / seconds, 2) if seconds else 0.0,
        "p50_ms": _rounded(percentile(latencies, 50)),
        "p95_ms": _rounded(percentile(latencies, 95)),
        "p99_ms": _rounded(percentile(latencies, 99)),
        "p99_first_ms": _rounded(percentile(first, 99)),
        "p99_last_ms": _rounded(percentile(last, 99)),
    }


def growth(samples: Sequence[ServerSample], warmup_s: float) -> dict[str, Any]:
    """PSS and descriptors at the ends, their highs, and their slopes after the warm-up."""
    if not samples:
        return {"samples": 0}
    settled = [s for s in samples if s.at >= warmup_s]
    names = sorted({name for s in samples for name in s.gauges})
    gauges = [name for name in names if not name.endswith("_total")]
    counters = [name for name in names if name.endswith("_total")]
    return {
        "samples": len(samples),
        "warmup_s": warmup_s,
        "pss_mb_first": round(samples[0].pss_mb, 1),
        "pss_mb_last": round(samples[-1].pss_mb, 1),
        "pss_mb_max": round(max(s.pss_mb for s in samples), 1),
        "fds_first": samples[0].fds,
        "fds_last": samples[-1].fds,
        "fds_max": max(s.fds for s in samples),
        "processes_max": max(s.processes for s in samples),
        "pss_mb_per_h": _rounded(slope_per_hour((s.at, s.pss_mb) for s in settled)),
        "fds_per_h": _rounded(slope_per_hour((s.at, float(s.fds)) for s in settled)),
        "open_files_per_h": _rounded(slope_per_hour((s.at, float(s.open_files)) for s in settled)),
        "pss_mb_per_h_by_process": _by_process(settled),
        "gauges_max": {g: max(s.gauges.get(g, 0.0) for s in samples) for g in gauges},
        "gauges_last": {g: samples[-1].gauges.get(g, 0.0) for g in gauges},
        "counters_during": {
            c: samples[-1].gauges.get(c, 0.0) - samples[0].gauges.get(c, 0.0) for c in counters
        },
    }


def _by_process(settled: Sequence[ServerSample]) -> dict[str, float]:
    """Each process's PSS slope after the warm-up, the fastest growing first."""
    keys = {key for s in settled for key in s.pss_mb_by_process}
    slopes = {
        key: slope_per_hour(
            (s.at, s.pss_mb_by_process[key]) for s in settled if key in s.pss_mb_by_process
        )
        for key in keys
    }
    found = {key: round(v, 1) for key, v in slopes.items() if v is not None}
    return dict(sorted(found.items(), key=lambda item: -item[1]))


def summary(
    requests: Sequence[Request],
    samples: Sequence[ServerSample],
    seconds: float,
    warmup_s: float,
) -> dict[str, Any]:
    """The whole report: per kind, all kinds together, and the server's growth."""
    window_s = min(300.0, seconds / 5)
    kinds = sorted({r.kind for r in requests})
    return {
        "seconds": round(seconds, 1),
        "window_s": round(window_s, 1),
        "kinds": {
            kind: outcomes([r for r in requests if r.kind == kind], seconds, window_s)
            for kind in kinds
        },
        "all": outcomes(requests, seconds, window_s),
        "server": growth(samples, warmup_s),
        "server_samples": [asdict(s) for s in samples],
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render(report: dict[str, Any]) -> str:
    """The report as the table a person reads."""
    lines = [
        f"{'kind':<14}{'reqs':>7}{'ok/s':>7}{'p50':>7}{'p95':>7}{'p99':>7}"
        f"{'p99 first':>10}{'p99 last':>9}{'5xx':>6}{'other':>6}{'429':>6}",
    ]
    rows = [*report["kinds"].items(), ("all", report["all"])]
    for kind, row in rows:
        lines.append(
            f"{kind:<14}{row['requests']:>7}{row['per_s']:>7.2f}{_ms(row['p50_ms']):>7}"
            f"{_ms(row['p95_ms']):>7}{_ms(row['p99_ms']):>7}{_ms(row['p99_first_ms']):>10}"
            f"{_ms(row['p99_last_ms']):>9}{row['server_errors_5xx']:>6}"
            f"{row['other_failures']:>6}{row['throttled_429']:>6}"
        )
    every = report["all"]
    lines.append(
        f"latency in ms over answered requests; first/last = the first and last "
        f"{report['window_s']:g} s; error rate {100 * every['error_rate']:.2f} % "
        f"(5xx and other failures; 429s apart)"
    )
    server = report["server"]
    if server.get("samples"):
        lines.append(
            f"server: {server['processes_max']} processes at most; PSS "
            f"{server['pss_mb_first']:.0f} -> {server['pss_mb_last']:.0f} MB "
            f"(max {server['pss_mb_max']:.0f}); fds {server['fds_first']} -> "
            f"{server['fds_last']} (max {server['fds_max']})"
        )
        lines.append(
            f"growth after {server['warmup_s']:.0f} s of warm-up: PSS "
            f"{_signed(server['pss_mb_per_h'])} MB/h, fds {_signed(server['fds_per_h'])}/h, "
            f"open files {_signed(server['open_files_per_h'])}/h"
        )
        fastest = list(server["pss_mb_per_h_by_process"].items())[:3]
        if fastest:
            lines.append(
                "  fastest: " + "; ".join(f"{key} {_signed(v)} MB/h" for key, v in fastest)
            )
        peaks = ", ".join(f"{k} {v:g}" for k, v in server["gauges_max"].items())
        lines.append(f"queue highs: {peaks or 'no /metrics'}")
        during = server["counters_during"]
        if during:
            hits = during.get("quarry_cache_hits_total", 0)
            misses = during.get("quarry_cache_misses_total", 0)
            lines.append(f"embedding cache during the run: {hits:g} hits, {misses:g} misses")
    return "\n".join(lines)


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}"
