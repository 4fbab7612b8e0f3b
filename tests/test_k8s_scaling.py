"""Autoscaling as deployed: each prometheus-adapter rule publishes its own name from series
Quarry or SGLang exports, each HPA asks its own pods' metrics, autoscaled Deployments leave
the count alone, and the PodMonitors scrape what the pods serve."""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import urlparse

import yaml

from app.settings import Settings

from .k8s_manifests import K8S, SGLANG_METRICS, SKIP_WITHOUT_KUBECTL, one

pytestmark = SKIP_WITHOUT_KUBECTL


@functools.cache
def quarry_metrics() -> frozenset[str]:
    """The series a Quarry process exports: its own registry's text exposition, with every
    live source answering."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from app.metrics import LiveSources, Metrics
    from embedding.cache import CacheStats
    from ingest.job_queue import QueueSnapshot

    metrics = Metrics()
    metrics.watch(
        LiveSources(
            model_stats=lambda: None,
            cache_stats=CacheStats,
            queue_depth=lambda: 0,
            jobs_finished=dict,
            batch_depth=dict,
            servers=list,
            ingest_queue=lambda: QueueSnapshot(in_flight={"worker": 1}),
        )
    )
    text = generate_latest(metrics.registry).decode()
    return frozenset(s.name for f in text_string_to_metric_families(text) for s in f.samples)


def exporter(deployment: dict[str, Any]) -> str:
    """What the pods' /metrics holds, by the server they run: "sglang" or "quarry"."""
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    command = main["command"]
    if "sglang.launch_server" in command:
        assert "--enable-metrics" in command  # SGLang serves no /metrics without it
        return "sglang"
    assert command[:2] == ["quarry", "serve"], command
    return "quarry"


def exported(kind: str) -> frozenset[str]:
    return SGLANG_METRICS if kind == "sglang" else quarry_metrics()


def adapter_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())
    return values


def adapter_series() -> dict[str, str]:
    """The name each prometheus-adapter rule publishes, and the series it reads."""
    rules = adapter_values()["rules"]["custom"]
    names = [rule["name"]["as"] for rule in rules]
    assert len(names) == len(set(names)), f"two adapter rules publish one name: {names}"
    series = {}
    for rule in rules:
        match = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"])
        assert match, rule["seriesQuery"]
        series[rule["name"]["as"]] = match.group(0)
    return series


def test_adapter_rules_publish_one_name_each_from_series_that_exist() -> None:
    values = adapter_values()
    assert values["rules"]["default"] is False  # no catch-all rules beside these
    known = quarry_metrics() | SGLANG_METRICS
    assert "quarry_http_requests_in_flight" in known and "sglang:num_queue_reqs" in known
    rules = {rule["name"]["as"]: rule for rule in values["rules"]["custom"]}
    for name, series in adapter_series().items():
        assert series in known, f"{name} reads {series}, which nothing here exports"
        assert name.startswith("sglang_") == series.startswith("sglang:"), name
        if series.endswith("_total"):  # a counter: its rate is the load, not its total
            assert "rate(<<.Series>>" in rules[name]["metricsQuery"], name
    # The adapter's Prometheus is in another namespace: a fully qualified Service.
    url = urlparse(values["prometheus"]["url"])
    assert re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+\.svc(\.cluster\.local)?", str(url.hostname))
    assert url.port is None and isinstance(values["prometheus"]["port"], int)


def test_each_hpa_asks_for_metrics_its_own_pods_export(manifests: Any) -> None:
    overlay, found = manifests
    series = adapter_series()
    asked = []
    for (kind, name), hpa in found.items():
        if kind != "HorizontalPodAutoscaler":
            continue
        target = one(found, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        assert target["metadata"]["namespace"] == hpa["metadata"]["namespace"]
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Resource":
                assert metric["resource"]["name"] in ("cpu", "memory")
                continue
            assert metric["type"] == "Pods", name
            published = metric["pods"]["metric"]["name"]
            assert published in series, f"{name}: no adapter rule publishes {published}"
            kind_of_pods = exporter(target)
            assert series[published] in exported(kind_of_pods), (
                f"{name} asks {kind_of_pods} pods for {series[published]}, which they lack"
            )
            asked.append(published)
    assert asked, "the embedding servers scale on a custom metric"
    if overlay == "gpu":  # SGLang's running-requests gauge stays 0 for embeddings
        assert "sglang:num_running_reqs" not in {series[name] for name in asked}


def test_autoscaled_deployments_leave_the_count_to_their_autoscaler(manifests: Any) -> None:
    _, found = manifests
    targets = [
        doc["spec"]["scaleTargetRef"]["name"]
        for (kind, _), doc in found.items()
        if kind in ("HorizontalPodAutoscaler", "ScaledObject")
    ]
    assert sorted(targets) == ["quarry-api", "quarry-embeddings", "quarry-worker"]
    for name in targets:
        assert "replicas" not in one(found, "Deployment", name)["spec"], name


def test_pod_monitors_scrape_a_port_and_path_the_pods_serve(manifests: Any) -> None:
    from app.main import create_app

    _, found = manifests
    paths = set(create_app(Settings(_env_file=None)).openapi()["paths"])
    scraped = set()
    for (kind, name), monitor in found.items():
        if kind != "PodMonitor":
            continue
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        selector = monitor["spec"]["selector"]["matchLabels"]
        pods = [
            doc
            for (k, _), doc in found.items()
            if k in ("Deployment", "StatefulSet")
            and doc["metadata"]["namespace"] == monitor["metadata"]["namespace"]
            and selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert pods, f"PodMonitor {name} selects no pods"
        for pod in pods:
            (main,) = pod["spec"]["template"]["spec"]["containers"]
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                assert endpoint["port"] in [p["name"] for p in main["ports"]], name
                if exporter(pod) == "quarry":
                    assert endpoint["path"] in paths, name
                else:
                    assert endpoint["path"] == "/metrics", name
            scraped.add(pod["metadata"]["name"])
    # Everything an HPA's custom metric comes from is scraped.
    assert {"quarry-api", "quarry-embeddings"} <= scraped
