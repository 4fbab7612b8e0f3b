"""Writes Quarry's Grafana dashboard and its Kubernetes copies from one source each.

The dashboard is built with grafana-foundation-sdk's builders (Grafana's own schema);
the alerts live in rules.yaml. Run `python deploy/monitoring/generate.py` after changing
either: it rewrites grafana/dashboards/quarry.json, k8s/prometheusrule.yaml and
k8s/dashboard-configmap.yaml (the tests fail while they differ from what it writes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import common, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as grafana
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as options
from grafana_foundation_sdk.models import dashboard as model

HERE = Path(__file__).resolve().parent
DASHBOARD_JSON = HERE / "grafana" / "dashboards" / "quarry.json"
RULES = HERE / "rules.yaml"
K8S_RULE = HERE / "k8s" / "prometheusrule.yaml"
K8S_DASHBOARD = HERE / "k8s" / "dashboard-configmap.yaml"

UID = "quarry-overview"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
HTTP = "quarry_http_request_duration_seconds"


def _query(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()


def _series(
    title: str, unit: str, queries: list[tuple[str, str]], description: str, width: int = 12
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common.VizLegendOptions()
            .display_mode(options.LegendDisplayMode.LIST)
            .placement(options.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common.VizTooltipOptions()
            .mode(options.TooltipDisplayMode.MULTI)
            .sort(options.SortOrder.DESCENDING)
        )
    )
    for index, (expr, legend) in enumerate(queries):
        panel.with_target(_query(expr, legend, chr(ord("A") + index)))
    return panel


def _stat(title: str, unit: str, expr: str, description: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(6)
        .height(4)
        .graph_mode(options.BigValueGraphMode.AREA)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(_query(expr, "", "A"))
    )


def _latency(quantile: str) -> tuple[str, str]:
    expr = (
        f"histogram_quantile({quantile}, sum by (route, le) "
        f'(rate({HTTP}_bucket{{route=~"/v1/.*"}}[{RATE}])))'
    )
    return expr, f"p{quantile[2:]} {{{{route}}}}"


def build() -> model.Dashboard:
    """The Quarry overview dashboard."""
    board = (
        grafana.Dashboard("Quarry")
        .uid(UID)
        .description("Quarry's API, model, cache, ingestion queue and embedding servers")
        .tags(["quarry"])
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("browser")
        .with_variable(
            grafana.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    board.with_row(grafana.Row("Overview"))
    board.with_panel(
        _stat(
            "Ready", "bool_yes_no", "min(quarry_ready)", "1 while every API's /readyz answers 200"
        )
    )
    board.with_panel(
        _stat(
            "Requests / s",
            "reqps",
            f'sum(rate({HTTP}_count{{route=~"/v1/.*"}}[{RATE}]))',
            "API requests per second (the /v1 routes)",
        )
    )
    board.with_panel(
        _stat(
            "Ingest queue depth",
            "short",
            "max(quarry_ingest_queue_depth)",
            "ingestion jobs queued or running",
        )
    )
    board.with_panel(
        _stat(
            "Data dir free",
            "percentunit",
            "min(quarry_data_dir_free_bytes / quarry_data_dir_size_bytes)",
            "the fullest API's data dir: share of its disk still free",
        )
    )
    board.with_row(grafana.Row("API"))
    board.with_panel(
        _series(
            "Latency by route",
            "s",
            [_latency("0.50"), _latency("0.95"), _latency("0.99")],
            "p50, p95 and p99 of the /v1 routes (route templates, not raw paths)",
            24,
        )
    )
    board.with_panel(
        _series(
            "Requests / s by route",
            "reqps",
            [(f'sum by (route) (rate({HTTP}_count{{route=~"/v1/.*"}}[{RATE}]))', "{{route}}")],
            "QPS per route",
        )
    )
    board.with_panel(
        _series(
            "Responses by status",
            "reqps",
            [(f"sum by (status) (rate({HTTP}_count[{RATE}]))", "{{status}}")],
            "every answer by HTTP status code",
        )
    )
    board.with_panel(
        _series(
            "429 Too Many Requests",
            "reqps",
            [(f'sum by (route) (rate({HTTP}_count{{status="429"}}[{RATE}]))', "{{route}}")],
            "refused at once: the model's queue is full, or a key's rate limit is spent",
        )
    )
    board.with_panel(
        _series(
            "Requests in flight",
            "short",
            [("sum by (instance) (quarry_http_requests_in_flight)", "{{instance}}")],
            "API requests being served",
        )
    )
    board.with_row(grafana.Row("Model and cache"))
    board.with_panel(
        _series(
            "Model batches / s",
            "ops",
            [
                (f"sum(rate(quarry_embedding_batches_total[{RATE}]))", "batches"),
                (f"sum(rate(quarry_embedding_texts_total[{RATE}]))", "texts"),
            ],
            "forward passes of the model, and the texts they embedded",
            8,
        )
    )
    board.with_panel(
        _series(
            "Tokens / s",
            "short",
            [(f"sum(rate(quarry_embedding_tokens_total[{RATE}]))", "tokens/s")],
            "tokens the model embedded per second",
            8,
        )
    )
    board.with_panel(
        _series(
            "Micro-batch size",
            "short",
            [
                (
                    "sum by (batcher) (rate(quarry_microbatch_size_sum[5m])) / "
                    "sum by (batcher) (rate(quarry_microbatch_size_count[5m]))",
                    "texts/call {{batcher}}",
                ),
                ("sum by (batcher) (quarry_batch_queue_depth)", "waiting {{batcher}}"),
            ],
            "texts per merged model call, and texts waiting for one",
            8,
        )
    )
    hits = f"sum(rate(quarry_cache_hits_total[{RATE}]))"
    misses = f"sum(rate(quarry_cache_misses_total[{RATE}]))"
    board.with_panel(
        _series(
            "Cache hit rate",
            "percentunit",
            [(f"{hits} / ({hits} + {misses})", "hit rate")],
            "share of texts whose vectors came from the Redis cache",
        )
    )
    board.with_panel(
        _series(
            "Cache errors / s",
            "ops",
            [(f"sum(rate(quarry_cache_errors_total[{RATE}]))", "errors")],
            "cache reads or writes that failed (Redis down): searches work, uncached",
        )
    )
    board.with_row(grafana.Row("Ingestion"))
    board.with_panel(
        _series(
            "Ingest queue",
            "short",
            [
                ("max(quarry_ingest_queue_depth)", "jobs queued or running"),
                ("max(quarry_ingest_files_queued)", "files queued"),
                ("max(quarry_ingest_files_scheduled)", "files waiting out a retry"),
            ],
            "the queue the workers take files from (every API sees the same queue: max)",
            8,
        )
    )
    board.with_panel(
        _series(
            "Files in flight by worker",
            "short",
            [
                ("max by (worker) (quarry_ingest_files_in_flight)", "{{worker}}"),
                ("max(quarry_ingest_workers)", "workers"),
            ],
            "files each worker holds now (the API's view of the queue: workers serve no "
            "metrics themselves)",
            8,
        )
    )
    board.with_panel(
        _series(
            "Retries and dead letters",
            "short",
            [
                ("max(increase(quarry_ingest_retries_total[5m]))", "retries (5m)"),
                ("max(increase(quarry_ingest_dead_letters_total[5m]))", "dead letters (5m)"),
                (
                    "max(increase(quarry_ingest_handoffs_total[5m]))",
                    "taken back from dead workers (5m)",
                ),
                (
                    "sum by (state) (increase(quarry_jobs_finished_total[5m]))",
                    "jobs {{state}} (5m)",
                ),
            ],
            "deliveries after the first, files given up on, files taken back from a worker "
            "that died holding them, and jobs finished",
            8,
        )
    )
    board.with_row(grafana.Row("Embedding servers and GPU"))
    board.with_panel(
        _series(
            "Embedding servers up",
            "short",
            [
                ("min by (server) (quarry_embedding_server_up)", "{{server}}"),
                ('up{job=~"(.+/)?(quarry-)?embeddings"}', "scraped {{instance}}"),
                (
                    "sum by (server) (increase(quarry_embedding_server_ejections_total[5m]))",
                    "ejected (5m) {{server}}",
                ),
            ],
            "remote servers in service (1) or ejected (0), and ejections: only when the API "
            "is a client of embedding servers (QUARRY_EMBEDDING_URLS); and the embedding "
            "servers Prometheus scrapes itself (job embeddings: SGLang, quarry --embeddings-only)",
            8,
        )
    )
    board.with_panel(
        _series(
            "Embedding server latency p95",
            "s",
            [
                (
                    "histogram_quantile(0.95, sum by (server, le) "
                    f"(rate(quarry_embedding_server_request_seconds_bucket[{RATE}])))",
                    "{{server}}",
                ),
                (
                    f"sum by (server) (rate(quarry_embedding_server_errors_total[{RATE}]))",
                    "errors/s {{server}}",
                ),
            ],
            "requests to remote embedding servers",
            8,
        )
    )
    board.with_panel(
        _series(
            "GPU memory",
            "bytes",
            [
                ("sum by (instance, device) (quarry_gpu_memory_reserved_bytes)", "reserved"),
                ("sum by (instance, device) (quarry_gpu_memory_allocated_bytes)", "allocated"),
                ("sum by (instance, device) (quarry_gpu_memory_total_bytes)", "total"),
            ],
            "CUDA memory of each process running the model on a GPU (none on CPU or remote)",
            8,
        )
    )
    built = board.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number  # Grafana keys links and edits by panel id: one each
    return built


def dashboard_json() -> str:
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def _yaml(document: dict[str, Any], comment: str) -> str:
    return comment + yaml.safe_dump(document, sort_keys=False, width=100)


def prometheus_rule() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "quarry", "labels": {"release": "kube-prometheus-stack"}},
        "spec": {"groups": groups},
    }
    return _yaml(rule, "# Generated from ../rules.yaml by ../generate.py: edit those, not this.\n")


def dashboard_configmap() -> str:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "quarry-dashboard", "labels": {"grafana_dashboard": "1"}},
        "data": {"quarry.json": dashboard_json()},
    }
    return _yaml(
        config,
        "# Generated from ../generate.py (the same JSON as ../grafana/dashboards/quarry.json).\n",
    )


def outputs() -> dict[Path, str]:
    return {
        DASHBOARD_JSON: dashboard_json(),
        K8S_RULE: prometheus_rule(),
        K8S_DASHBOARD: dashboard_configmap(),
    }


if __name__ == "__main__":
    for path, text in outputs().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE)}")
