"""`deploy/k8s` renders with kustomize, passes the Kubernetes schemas, and agrees with the code:
every name one resource gives another (a Service, a pod port, a metric, a Redis list) is one
that exists, in the namespace where it is looked up."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from app.settings import Settings
from client.config import UiSettings

from .k8s_manifests import (
    CRD_GROUPS,
    EXTRA_VARIABLES,
    K8S,
    ROOT,
    SKIP_WITHOUT_KUBECTL,
    config,
    container,
    one,
)

pytestmark = SKIP_WITHOUT_KUBECTL


def test_every_manifest_passes_the_kubernetes_schemas(manifests: Any) -> None:
    import kubernetes_validate

    _, found = manifests
    version = kubernetes_validate.latest_version()
    for doc in found.values():
        if doc["apiVersion"].startswith(CRD_GROUPS):  # checked against the code below
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


def _qualified_service(found: dict[tuple[str, str], Any], address: str) -> dict[str, Any]:
    """The Service that `name.namespace.svc.cluster.local:port` names, in that namespace."""
    match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", address)
    assert match, f"{address} is not a Service's fully qualified name and port"
    name, namespace, port = match.groups()
    service = one(found, "Service", name)
    assert service["metadata"]["namespace"] == namespace, address
    assert int(port) in [p["port"] for p in service["spec"]["ports"]], address
    return service


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
    # One URL for every embedding pod: the client's bound on it covers them all at their most.
    most = one(found, "HorizontalPodAutoscaler", "quarry-embeddings")["spec"]["maxReplicas"]
    per_server = Settings.model_fields["remote_in_flight"].default
    assert int(data["QUARRY_REMOTE_IN_FLIGHT"]) >= per_server * most
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
    assert one(found, "HorizontalPodAutoscaler", "quarry-api")["spec"]["minReplicas"] >= 2


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
    # The pods read the key from the Secret themselves: the chart's `apiKey.valueFrom`
    # copies it with Helm's `lookup`, empty under `helm template` and GitOps.
    assert values["apiKey"] is False
    env = {e["name"]: e for e in values["env"]}
    compose = (ROOT / "compose.yaml").read_text()
    assert "QDRANT__SERVICE__API_KEY: ${QDRANT_API_KEY" in compose  # the variable Qdrant reads
    key = env["QDRANT__SERVICE__API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key == {"name": "quarry-secrets", "key": "QUARRY_QDRANT_API_KEY"}
    assert key["key"].removeprefix("QUARRY_").lower() in Settings.model_fields
    api = container(one(found, "Deployment", "quarry-api"), "api")
    assert {"secretRef": {"name": key["name"]}} in api["envFrom"]  # the API reads the same
    pinned = re.search(r"image: qdrant/qdrant:(v[\d.]+)", compose)
    assert pinned is not None and values["image"]["tag"] == pinned.group(1)
    tag = tuple(int(x) for x in pinned.group(1).lstrip("v").split("."))
    assert tag[:2] >= qdrant_store.minimum_server()


def test_workers_share_the_data_volume_and_scale_on_the_queue_the_code_fills(
    manifests: Any, redis_process: Any
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
    assert 0 < scaler["minReplicaCount"] < scaler["maxReplicaCount"]
    lists = {}
    redis_url = urlparse(data["QUARRY_REDIS_URL"])
    for trigger in scaler["triggers"]:
        assert trigger["type"] == "redis"
        meta = trigger["metadata"]
        # The keda-operator resolves the address from its own namespace.
        service = _qualified_service(found, meta["address"])
        assert service["metadata"]["name"] == redis_url.hostname
        assert meta["address"].endswith(f":{redis_url.port}")
        assert f"/{meta['databaseIndex']}" == redis_url.path
        lists[trigger["name"]] = meta["listName"]
    name = queue_name(settings.queue_name, Path("/unused"))
    assert lists["queued"] == queued_list(name)
    assert all(key.startswith(f"saq:{name}:") for key in lists.values())
    # Files in flight count as much as waiting ones, and the target is what one worker
    # holds at once: busy workers never look idle to the autoscaler.
    modifiers = scaler["advanced"]["scalingModifiers"]
    assert sorted(re.split(r"\s*\+\s*", modifiers["formula"])) == sorted(lists)
    assert modifiers["metricType"] == "AverageValue"
    command = worker["command"]
    assert int(modifiers["target"]) <= int(command[command.index("--concurrency") + 1])
    counted = asyncio.run(_counted_as_a_file_moves(redis_process.url, name, lists))
    assert counted == [1, 1, 0], "the lists KEDA counts miss a file waiting or in flight"


async def _counted_as_a_file_moves(url: str, name: str, lists: dict[str, str]) -> list[int]:
    """What the triggers' lists add up to while one file is queued, taken, then done (a
    queue of its own on the test Redis, its keys named as the triggers name them)."""
    from saq.job import Status

    from ingest.job_queue import IngestQueue, connect

    fresh = f"keda-{uuid.uuid4().hex}"
    keys = [key.replace(f"saq:{name}:", f"saq:{fresh}:", 1) for key in lists.values()]
    queue = IngestQueue(connect(url, fresh), 3.0)
    redis: Any = queue.queue.redis  # type: ignore[attr-defined]

    async def total() -> int:
        return sum([int(await redis.llen(key)) for key in keys])

    try:
        await queue.enqueue("job", [0])
        counted = [await total()]
        job = await queue.queue.dequeue(timeout=2)
        assert job is not None
        counted.append(await total())
        await queue.queue.finish(job, Status.COMPLETE)
        counted.append(await total())
        return counted
    finally:
        await queue.close()


def test_the_readme_names_files_that_exist_and_a_secret_with_every_key_used(
    manifests: Any,
) -> None:
    _, found = manifests
    readme = (K8S / "README.md").read_text()
    assert "deploy/k8s/README.md" in (K8S / "base" / "kustomization.yaml").read_text()
    for path in set(re.findall(r"deploy/(?:k8s|helm|nginx)/[\w./-]+\w", readme)):
        assert (ROOT / path).exists(), path
    for path in set(re.findall(r"`((?:base|overlays)/[\w./-]+\w)`", readme)):
        assert (K8S / path).exists(), path
    created = set(re.findall(r"--from-literal=(\w+)=", readme))
    used = {
        ref["key"]
        for doc in found.values()
        if doc["kind"] in ("Deployment", "StatefulSet")
        for c in doc["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if (ref := e.get("valueFrom", {}).get("secretKeyRef", {})).get("name") == "quarry-secrets"
    }
    qdrant = yaml.safe_load((ROOT / "deploy" / "helm" / "qdrant-values.yaml").read_text())
    used |= {e["valueFrom"]["secretKeyRef"]["key"] for e in qdrant["env"]}
    assert used <= created, f"the README's Secret lacks {used - created}"
    settings = {f"QUARRY_{n.upper()}" for n in (*Settings.model_fields, *UiSettings.model_fields)}
    assert created <= settings | used  # the API pods read the rest through envFrom
    assert "QUARRY_API_KEYS" in created  # the API is closed by default
