"""A real Prometheus scrapes a real `quarry serve` (a client of a second, embeddings-only
one): every dashboard query and every alert expression must find data, and every rule
must evaluate. A panel built on a name Quarry does not export fails here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ..servers import Process, free_port, quarry_env, wait_job
from .conftest import MONITORING
from .promql import metric_names, operands

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="needs the prometheus binary (Debian's prometheus package)"
)

# Names with no samples in this test, each with why; each must still be declared in the
# API's /metrics, or (GPU) be one this test cannot make exist.
NO_SAMPLES_HERE = {
    "quarry_ingest_files_in_flight": "only while a worker holds a file; the test's files "
    "are ingested between two reconciler passes",
}
NOT_EXPORTED_HERE = {
    "quarry_gpu_memory_allocated_bytes": "only where torch holds a CUDA context",
    "quarry_gpu_memory_reserved_bytes": "only where torch holds a CUDA context",
    "quarry_gpu_memory_total_bytes": "only where torch holds a CUDA context",
}


class Prometheus:
    """One `prometheus` process on a free loopback port, with its own storage."""

    def __init__(self, directory: Path, targets: list[str], embeddings: list[str]) -> None:
        self.port = free_port()
        self.directory = directory
        rules = directory / "rules.yaml"
        shutil.copy(MONITORING / "rules.yaml", rules)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {"job_name": "quarry-api", "static_configs": [{"targets": targets}]},
                {"job_name": "embeddings", "static_configs": [{"targets": embeddings}]},
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert PROMETHEUS is not None
        with (self.directory / "prometheus.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait(lambda: _answers(self.url + "/-/ready"), "prometheus ready", self.log)

    def log(self) -> str:
        return (self.directory / "prometheus.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (expr, body)
        return list(body["data"]["result"])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(check: Callable[[], bool], what: str, log: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, f"{what}\n{log()}"
        time.sleep(0.2)


@pytest.fixture()
def stack(tmp_path: Path, minilm_path: str, redis_process: Any) -> Iterator[dict[str, Any]]:
    node = Process(
        ["serve", "--embeddings-only"],
        quarry_env(tmp_path / "node", minilm_path, "redis://127.0.0.1:1/0"),
        tmp_path / "node.log",
    )
    api = Process(
        "serve",
        quarry_env(
            tmp_path / "data",
            minilm_path,
            redis_process.url.rsplit("/", 1)[0] + "/9",
            QUARRY_EMBEDDING_URLS=f"{node.url}/v1",
            QUARRY_REMOTE_HEALTH_INTERVAL_S="0.5",
            QUARRY_REMOTE_RETRY_S="1",
            QUARRY_RECONCILE_S="1",
            # One text may wait for the model, merged for 300 ms: concurrent calls get 429.
            QUARRY_MODEL_QUEUE_MAX="1",
            QUARRY_BATCH_WAIT_MS="300",
        ),
        tmp_path / "api.log",
    )
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{api.port}"], [f"127.0.0.1:{node.port}"])
    try:
        node.launch()  # all three start at once: the API is ready once the node answers
        api.launch()
        prometheus.start()
        node.wait_ready()
        api.wait_ready()
        yield {"api": api, "node": node, "prometheus": prometheus, "tmp": tmp_path}
    finally:
        api.stop()
        node.stop()
        prometheus.stop()


def _traffic(api: str, tmp: Path) -> set[int]:
    """Uploads, searches, a 404, embeddings (some refused with 429): the codes seen."""
    files = []
    for name, text in (
        ("owls.txt", "Owls hunt mice at night using silent flight and sharp hearing."),
        ("bees.txt", "Bees carry pollen between flowers and make honey in the hive."),
    ):
        (tmp / name).write_text(text)
        files.append(("files", (name, text.encode())))
    job = httpx.post(f"{api}/v1/documents", files=files, timeout=30).json()
    assert wait_job(api, job["job_id"], timeout=60)["state"] == "done"
    codes = {
        httpx.post(f"{api}/v1/search", json={"query": q}, timeout=30).status_code
        for q in ("night birds", "honey", "night birds")
    }
    codes.add(httpx.get(f"{api}/v1/documents/no-such-doc", timeout=10).status_code)
    model = httpx.get(f"{api}/v1/models", timeout=10).json()["data"][0]["id"]

    def embed(i: int) -> int:
        body = {"model": model, "input": [f"text {i}"]}
        return httpx.post(f"{api}/v1/embeddings", json=body, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        codes |= set(pool.map(embed, range(8)))
    return codes


def _expressions() -> dict[str, str]:
    board = json.loads((MONITORING / "grafana" / "dashboards" / "quarry.json").read_text())
    found = {
        f"panel {panel['title']!r} {target['refId']}": target["expr"].replace(
            "$__rate_interval", "1m"
        )
        for panel in board["panels"]
        for target in panel.get("targets", [])
    }
    for group in yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            found[f"alert {rule['alert']}"] = rule["expr"]
    return found


def test_every_panel_and_alert_finds_quarrys_metrics(stack: dict[str, Any]) -> None:
    prometheus: Prometheus = stack["prometheus"]
    api: Process = stack["api"]
    node: Process = stack["node"]
    codes = _traffic(api.url, stack["tmp"])
    assert {200, 404, 429} <= codes, codes

    node.kill()  # an embedding server goes: ejected, searches answer 503
    _wait(lambda: httpx.get(api.url + "/readyz").status_code == 503, "the server ejected")
    assert httpx.post(f"{api.url}/v1/search", json={"query": "owls"}).status_code == 503

    def scraped() -> bool:  # two scrapes since the 503, so that rates have two points
        return bool(
            prometheus.query(
                'count_over_time(quarry_http_request_duration_seconds_count{status="503",'
                'route="/v1/search"}[1m]) >= 2'
            )
        )

    _wait(scraped, "the 503 scraped twice", prometheus.log)
    exposition = httpx.get(api.url + "/metrics").text
    declared = set(re.findall(r"^# TYPE (\S+) ", exposition, re.M))

    names = set().union(*(metric_names(e) for e in _expressions().values()))
    for name in sorted(names):
        if name in NOT_EXPORTED_HERE:
            continue
        family = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert name == "up" or family in declared or name in declared, name
        if name not in NO_SAMPLES_HERE:
            assert prometheus.query(name), f"{name}: no series in Prometheus"
    assert not prometheus.query("quarry_no_such_metric")  # the check can fail

    for where, expr in _expressions().items():
        prometheus.query(expr)  # evaluates without error
        for part in operands(expr):
            if metric_names(part) & (NO_SAMPLES_HERE.keys() | NOT_EXPORTED_HERE.keys()):
                continue
            assert prometheus.query(part), f"{where}: {part} returns no data"

    groups = httpx.get(prometheus.url + "/api/v1/rules").json()["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    written = yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"]
    assert set(rules) == {rule["alert"] for group in written for rule in group["rules"]}
    for name, rule in rules.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
    # The real thing trips the alerts it should: the killed server is out, and unscraped.
    assert prometheus.query("quarry_embedding_server_up == 0")
    (down,) = [r for g in written for r in g["rules"] if r["alert"] == "EmbeddingServerDown"]
    _wait(lambda: bool(prometheus.query(down["expr"])), "the node's scrape failing")
