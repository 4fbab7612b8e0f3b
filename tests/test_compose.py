"""`compose.yaml` agrees with the code: services, ports, health checks, environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from app.settings import Settings
from client.config import UiSettings

ROOT = Path(__file__).resolve().parents[1]


class _ComposeLoader(yaml.SafeLoader):
    """Compose's own YAML: `!reset` / `!override` tags are part of the file format."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor("!override", lambda loader, node: loader.construct_mapping(node))


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load((ROOT / name).read_text(), Loader=_ComposeLoader)
    return data


@pytest.fixture(scope="module")
def all_services() -> dict[str, Any]:
    return dict(load("compose.yaml")["services"])


@pytest.fixture(scope="module")
def services(all_services: dict[str, Any]) -> dict[str, Any]:
    """What `docker compose up` starts (no profile)."""
    return {name: s for name, s in all_services.items() if not s.get("profiles")}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def container_ports(service: dict[str, Any]) -> set[int]:
    listed = [*service.get("ports", []), *service.get("expose", [])]
    return {int(str(p).split(":")[-1]) for p in listed}


def test_every_variable_is_one_the_code_reads(services: dict[str, Any]) -> None:
    fields = {f"QUARRY_{name.upper()}" for name in Settings.model_fields}
    ui_fields = {f"QUARRY_{name.upper()}" for name in UiSettings.model_fields}
    api_env, ui_env = env_of(services["api"]), env_of(services["ui"])
    assert {k for k in api_env if k.startswith("QUARRY_")} <= fields
    assert set(ui_env) <= ui_fields
    # The values parse: the settings the API would run with.
    values = {k.removeprefix("QUARRY_").lower(): v for k, v in api_env.items() if "${" not in v}
    settings = Settings(_env_file=None, **values)
    assert settings.host == "0.0.0.0" and settings.data_dir == Path("/data")


def test_services_find_each_other(services: dict[str, Any]) -> None:
    assert set(services) == {"qdrant", "redis", "api", "ui"}
    api_env = env_of(services["api"])
    qdrant = urlparse(api_env["QUARRY_QDRANT_URL"])
    assert qdrant.hostname == "qdrant" and qdrant.port in container_ports(services["qdrant"])
    assert str(qdrant.port) in healthcheck_text(services["qdrant"])
    redis_url = urlparse(api_env["QUARRY_REDIS_URL"])
    assert redis_url.hostname == "redis" and redis_url.port == 6379
    port = int(api_env["QUARRY_PORT"])
    assert port in container_ports(services["api"])
    api_url = urlparse(env_of(services["ui"])["QUARRY_API_URL"])
    assert api_url.hostname == "api" and api_url.port == port
    ui_command = services["ui"]["command"]
    ui_port = int(ui_command[ui_command.index("--port") + 1])
    assert ui_port in container_ports(services["ui"])
    assert f":{ui_port}/_stcore/health" in healthcheck_text(services["ui"])
    assert services["ui"]["image"] == services["api"]["image"]  # one image for both


def test_health_checks_and_startup_order(services: dict[str, Any]) -> None:
    from app.main import create_app

    paths = set(create_app(Settings(_env_file=None)).openapi()["paths"])
    api_check = healthcheck_text(services["api"])
    port = env_of(services["api"])["QUARRY_PORT"]
    assert f":{port}/readyz" in api_check and "/readyz" in paths
    for name in ("qdrant", "redis", "api", "ui"):
        assert services[name]["healthcheck"]["test"], name
    depends = services["api"]["depends_on"]
    assert {depends[s]["condition"] for s in ("qdrant", "redis")} == {"service_healthy"}
    assert "ping" in healthcheck_text(services["redis"])


def test_volumes_gpu_and_persistence(services: dict[str, Any]) -> None:
    api = services["api"]
    env = env_of(api)
    mounts = {m.split(":")[1]: m.split(":")[0] for m in api["volumes"]}
    assert env["HF_HOME"] in mounts and env["QUARRY_DATA_DIR"] in mounts  # model downloads once
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "--appendonly" in services["redis"]["command"]
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert any(v.endswith(":/qdrant/storage") for v in services["qdrant"]["volumes"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX" in dockerfile and "TORCH_INDEX" in api["build"]["args"]


def test_cpu_override_drops_the_gpu_and_picks_a_small_model() -> None:
    api = load("compose.cpu.yaml")["services"]["api"]
    assert api["deploy"] is None  # `!reset`: no GPU reservation
    assert api["environment"]["QUARRY_DEVICE"] == "cpu"
    assert "MiniLM" in api["environment"]["QUARRY_EMBEDDING_MODEL"]
    assert api["build"]["args"]["TORCH_INDEX"].endswith("/cpu")


def _version(image: str) -> tuple[int, ...]:
    tag = image.rsplit(":", 1)[1].lstrip("v")
    return tuple(int(part) for part in tag.split(".") if part.isdigit())


def test_qdrant_image_has_every_feature_the_store_uses(services: dict[str, Any]) -> None:
    from retrieval import qdrant_store

    code = Path(qdrant_store.__file__).read_text()
    used = {name: v for name, v in qdrant_store.SERVER_FEATURES.items() if name in code}
    assert used == qdrant_store.SERVER_FEATURES  # the table lists only what the code uses
    pinned = _version(services["qdrant"]["image"])
    assert len(pinned) == 3, "pin an exact Qdrant release"
    too_new = {name: v for name, v in used.items() if v > pinned[:2]}
    assert not too_new, f"{services['qdrant']['image']} lacks {too_new}"
    assert pinned[:2] >= qdrant_store.minimum_server() >= (1, 16)


def test_only_the_api_is_published_and_qdrant_needs_a_key(services: dict[str, Any]) -> None:
    for name in ("qdrant", "redis"):
        assert "ports" not in services[name], f"{name} must not be published to the host"
    [ui_port] = services["ui"]["ports"]
    assert str(ui_port).startswith("${QUARRY_UI_BIND:-127.0.0.1}:")
    key = env_of(services["qdrant"])["QDRANT__SERVICE__API_KEY"]
    assert key.startswith("${QDRANT_API_KEY:?")  # required: no stack without a key
    assert env_of(services["api"])["QUARRY_QDRANT_API_KEY"] == key
    assert env_of(services["api"])["QUARRY_API_KEYS"].startswith("${QUARRY_API_KEYS:?")
    assert env_of(services["ui"])["QUARRY_API_KEY"].startswith("${QUARRY_API_KEY:?")


needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="needs docker-compose (apt-get install docker-compose)",
)
KEYS = {"QDRANT_API_KEY": "a-secret", "QUARRY_API_KEYS": "k1,k2", "QUARRY_API_KEY": "k1"}


def compose_config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` (validates, resolves variables) with only `env` set."""
    return subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "config", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ["PATH"], **env},
    )


def sglang_services(services: dict[str, Any]) -> dict[str, Any]:
    return {n: s for n, s in services.items() if "sglang.launch_server" in s.get("command", [])}


def nginx_site(lb: dict[str, Any]) -> str:
    site_file = next(v.split(":")[0] for v in lb["volumes"] if "embeddings.conf" in v)
    return (ROOT / site_file).read_text()


@needs_compose
def test_docker_compose_config_validates() -> None:
    def config(**env: str) -> subprocess.CompletedProcess[str]:
        return compose_config("-q", **env)

    keys = KEYS
    result = config(**keys)
    assert result.returncode == 0, result.stderr
    scaled = config(**keys, COMPOSE_PROFILES="scale")
    assert scaled.returncode == 0, scaled.stderr
    refused = config()
    assert refused.returncode != 0 and "QDRANT_API_KEY" in refused.stderr
    for missing in ("QUARRY_API_KEYS", "QUARRY_API_KEY"):  # closed by default, as Qdrant is
        without = {k: v for k, v in keys.items() if k != missing}
        open_stack = config(**without)
        assert open_stack.returncode != 0 and missing in open_stack.stderr


def test_the_scale_profile_puts_sglang_behind_nginx(all_services: dict[str, Any]) -> None:
    gpus, lb = sglang_services(all_services), all_services["embeddings-lb"]
    assert len(gpus) >= 2 and lb["profiles"] == ["scale"]
    site = nginx_site(lb)
    upstream = re.search(r"server ([a-z0-9-]+):(\d+) resolve ", site)
    assert upstream, "the upstream names one DNS name that nginx re-resolves"
    alias, port = upstream.group(1), int(upstream.group(2))
    model = env_of(all_services["api"])["QUARRY_EMBEDDING_MODEL"]
    for name, server in gpus.items():
        assert server["profiles"] == ["scale"], name
        command = server["command"]
        assert "--is-embedding" in command and "--enable-metrics" in command
        assert command[command.index("--model-path") + 1] == model
        assert int(command[command.index("--port") + 1]) == port in container_ports(server)
        assert f":{port}/health" in healthcheck_text(server)
        assert alias in server["networks"]["default"]["aliases"], f"nginx cannot reach {name}"
        assert lb["depends_on"].get(name, {}).get("condition") == "service_healthy", name
    assert "least_conn;" in site and "non_idempotent" in site
    listen = int(re.search(r"listen (\d+);", site).group(1))  # type: ignore[union-attr]
    assert listen in container_ports(lb) and f":{listen}/health" in healthcheck_text(lb)
    # The documented URL for the API reaches the balancer, and is a valid setting.
    header = (ROOT / "compose.yaml").read_text().split("services:")[0]
    url = re.search(r"QUARRY_EMBEDDING_URLS=(\S+)", header).group(1)  # type: ignore[union-attr]
    assert urlparse(url).hostname == "embeddings-lb" and urlparse(url).port == listen
    assert Settings(_env_file=None, embedding_urls=url).embedding_url_list == (url,)
    assert env_of(all_services["api"])["QUARRY_EMBEDDING_URLS"] == "${QUARRY_EMBEDDING_URLS:-}"
    assert "--scale embeddings" not in header  # one service per GPU, never replicas of one


@needs_compose
def test_each_gpu_service_holds_its_own_device(all_services: dict[str, Any]) -> None:
    result = compose_config(**KEYS, COMPOSE_PROFILES="scale")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    held: dict[str, str] = {}
    for name, service in resolved.items():
        if "scale" not in service.get("profiles", []):
            continue
        reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
        for device in reservations.get("devices", []):
            # `count` is not spread: every replica of the service would get the same GPUs.
            assert "count" not in device, f"{name} reserves GPUs by count"
            for gpu in device["device_ids"]:
                assert gpu not in held, f"{name} and {held[gpu]} share GPU {gpu}"
                held[gpu] = name
    assert set(held.values()) == set(sglang_services(all_services))
    assert len(held) >= 2


def _seconds(site: str, directive: str) -> float:
    match = re.search(rf"^\s*{directive} (\d+)s?;", site, re.M)
    assert match, f"no {directive} in the nginx site"
    return float(match.group(1))


def test_nginx_follows_the_replicas_and_retries_within_the_clients_time(
    all_services: dict[str, Any],
) -> None:
    lb = all_services["embeddings-lb"]
    site = nginx_site(lb)
    tag = lb["image"].split(":", 1)[1]
    version = tuple(int(x) for x in re.match(r"[\d.]+", tag).group(0).split("."))  # type: ignore[union-attr]
    assert version >= (1, 27, 3), "`resolve` in an upstream needs nginx 1.27.3 or later"
    # Docker's DNS, at the http level: nginx re-reads the replicas' addresses.
    assert re.search(r"^resolver 127\.0\.0\.11 valid=\d+s", site, re.M)
    block = re.search(r"upstream \w+ \{(.*?)\n\}", site, re.S)
    assert block and re.search(r"^\s*zone \w+ \d+k;", block.group(1), re.M)
    # The client gives up after QUARRY_REMOTE_TIMEOUT_S: every try nginx starts ends first.
    api_env = env_of(all_services["api"])
    assert "QUARRY_REMOTE_TIMEOUT_S" not in api_env
    client = Settings(_env_file=None).remote_timeout_s
    attempt = _seconds(site, "proxy_connect_timeout") + max(
        _seconds(site, "proxy_read_timeout"), _seconds(site, "proxy_send_timeout")
    )
    assert _seconds(site, "proxy_next_upstream_tries") >= 2
    assert _seconds(site, "proxy_next_upstream_timeout") + attempt < client
    assert 2 * attempt < client  # a whole retry fits


def test_the_clients_in_flight_bound_counts_every_gpu(all_services: dict[str, Any]) -> None:
    """The scale profile's one URL (nginx) stands for every SGLang service: the client's
    bound for that URL is the per-server default times their number."""
    raw = env_of(all_services["api"])["QUARRY_REMOTE_IN_FLIGHT"]
    match = re.fullmatch(r"\$\{QUARRY_REMOTE_IN_FLIGHT:-(\d+)\}", raw)
    assert match, raw
    per_server = Settings.model_fields["remote_in_flight"].default
    assert int(match.group(1)) == per_server * len(sglang_services(all_services))


def test_the_workers_profile_shares_the_data_and_embeds_through_the_api(
    all_services: dict[str, Any],
) -> None:
    from app.worker import HAND_BACK_S

    worker, api = all_services["worker"], all_services["api"]
    assert worker["command"][:2] == ["quarry", "worker"] and worker["profiles"] == ["workers"]
    env = env_of(worker)
    assert {k for k in env if k.startswith("QUARRY_")} <= {
        f"QUARRY_{name.upper()}" for name in Settings.model_fields
    }
    assert env["QUARRY_DATA_DIR"] == env_of(api)["QUARRY_DATA_DIR"]
    assert {v for v in worker["volumes"] if v.startswith("quarry_data:")} == {
        v for v in api["volumes"] if v.startswith("quarry_data:")
    }
    for key in ("QUARRY_QDRANT_URL", "QUARRY_REDIS_URL", "QUARRY_EMBEDDING_MODEL"):
        assert env[key] == env_of(api)[key], key
    embed = urlparse(env["QUARRY_EMBEDDING_URLS"].split(":-", 1)[1].rstrip("}"))
    assert embed.hostname == "api" and embed.port in container_ports(api)
    grace = int(worker["stop_grace_period"].rstrip("s"))
    assert grace >= Settings(_env_file=None).worker_grace_s + HAND_BACK_S
