"""`bench/soak.py` end to end: the locustfile's whole mix for half a minute against its own
real `quarry serve` (MiniLM, real Redis), and the report it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..servers import REPO, quarry_env

KINDS = {"search:fresh", "search:repeat", "embed:short", "embed:long", "upload", "job"}


@pytest.mark.timeout(240)
def test_a_short_soak_sends_every_kind_and_reports_them(
    tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    env = quarry_env(tmp_path / "unused", minilm_path, redis_process.url)
    report_path = tmp_path / "soak.json"
    # Even weights, so no kind is left out of a short run by chance.
    arguments = (
        "--duration 30s --warmup 15s --users 4 --spawn-rate 4 --sample-every 2 --poll-share 1 "
        "--search-weight 40 --embed-short-weight 20 --embed-long-weight 20 --upload-weight 20"
    )
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "soak.py"),
            *arguments.split(),
            "--json",
            str(report_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(report_path.read_text())

    assert set(report["kinds"]) == KINDS, report["kinds"]
    for kind, row in report["kinds"].items():
        assert row["ok"] > 0, (kind, row)
        assert row["server_errors_5xx"] == 0, (kind, row)
        assert row["other_failures"] == 0, (kind, row)
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], (kind, row)
    assert report["all"]["error_rate"] == 0
    assert report["all"]["per_s"] > 0

    samples = report["server_samples"]
    assert len(samples) >= 5
    assert all(s["pss_mb"] > 0 and s["fds"] > 0 for s in samples)
    # The serve process and what it starts on demand (its worker) are all counted.
    assert report["server"]["processes_max"] >= 2
    assert any("quarry_batch_queue_depth" in name for name in samples[-1]["gauges"])
    assert report["server"]["pss_mb_per_h"] is not None
    # The table a person reads has a row per kind.
    for kind in KINDS:
        assert kind in run.stdout
