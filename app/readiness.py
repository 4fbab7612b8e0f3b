"""/readyz: what the API process can do now, check by check (also scraped as metrics)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.metrics import DataDirSpace
from app.settings import Settings
from embedding.balancer import ServerState
from embedding.errors import QuarryError
from ingest.job_service import JobService
from ingest.parsing import tools_report

if TYPE_CHECKING:
    from app.state import QuarryState


@dataclass
class Readiness:
    status: str  # ready, degraded, not_ready
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def http_status(self) -> int:
        return 503 if self.status == "not_ready" else 200


def readiness(state: QuarryState) -> Readiness:
    checks: dict[str, dict[str, Any]] = {"model": _model_check(state)}
    if state.embeddings_only:
        return Readiness("ready" if checks["model"]["ok"] else "not_ready", checks)
    resources = state.resources
    try:
        collections = resources.store.collections()
        checks["store"] = {"ok": True, "collections": len(collections)}
    except QuarryError as exc:
        checks["store"] = {"ok": False, "reason": exc.message}
    except Exception as exc:
        checks["store"] = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
    checks["parsers"] = tools_report(resources.ocr_options)
    if resources.cache.ping():
        checks["cache"] = {"ok": True}
    else:
        checks["cache"] = {
            "ok": False,
            "reason": "Redis is unreachable: searches work, embeddings are not cached",
        }
    checks["queue"] = _queue_check(state.jobs)
    checks["disk"] = _disk_check(state.settings)
    if checks["model"]["ok"] and checks["store"]["ok"] and state.migrations is not None:
        source = resources.model_source
        where = state.settings.embedding_model or source.model_id
        found = state.migrations.offers(source.model_id, where)
        checks["migrations"] = {"ok": True, "offer": found}
    if not (checks["model"]["ok"] and checks["store"]["ok"]):
        return Readiness("not_ready", checks)
    # The queue shares the cache's Redis: the cache check already degrades for it.
    healthy = checks["cache"]["ok"] and checks["disk"]["ok"]
    return Readiness("ready" if healthy else "degraded", checks)


def data_dir_space(settings: Settings) -> DataDirSpace | None:
    try:
        usage = shutil.disk_usage(settings.data_dir)
    except OSError:
        return None
    return DataDirSpace(usage.free, usage.total, settings.min_free_mb * 1_000_000)


def _disk_check(settings: Settings) -> dict[str, Any]:
    """Room left in the data dir: degraded below twice QUARRY_MIN_FREE_MB (uploads get
    507 below it), before the disk fills."""
    folder = settings.data_dir
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return {"ok": False, "reason": f"cannot read the data dir {folder}: {exc}"}
    floor = settings.min_free_mb * 1_000_000
    check: dict[str, Any] = {"ok": free >= 2 * floor, "free_bytes": free, "floor_bytes": floor}
    if not check["ok"]:
        check["reason"] = (
            f"the data dir {folder} has {free / 1e6:.0f} MB free; uploads are refused "
            f"(507) below {floor / 1e6:.0f} MB (QUARRY_MIN_FREE_MB)"
        )
    return check


def _queue_check(jobs: JobService) -> dict[str, Any]:
    """The ingestion queue as of the last reconciler pass (uploads are accepted either
    way: files wait on disk until the queue is back)."""
    snapshot = jobs.snapshot
    check: dict[str, Any] = {
        "ok": snapshot.reachable,
        "queued": snapshot.queued,
        "in_flight": sum(snapshot.in_flight.values()),
        "workers": snapshot.workers,
    }
    if not snapshot.reachable:
        check["reason"] = "the queue's Redis is unreachable: uploads wait until it is back"
    return check


def _model_check(state: QuarryState) -> dict[str, Any]:
    resources = state.resources
    if state.model_error is not None:
        return {"ok": False, "reason": state.model_error.message}
    if resources.remote:
        return _servers_check(state)
    if not resources.model_loaded:
        return {
            "ok": False,
            "reason": "the model is still loading",
            **resources.model_choice.describe(),
        }
    return {"ok": True, **resources.model_choice.describe()}


def _servers_check(state: QuarryState) -> dict[str, Any]:
    """Remote: ready while one server is in service; the rest are named with why."""
    servers = state.embedding_servers()
    listed = [
        {"url": s.url, "state": s.state.value, "in_flight": s.in_flight, "reason": s.reason}
        for s in servers
    ]
    check: dict[str, Any] = {**state.resources.model_choice.describe(), "servers": listed}
    out = [s for s in servers if s.state is ServerState.EJECTED]
    check["ok"] = bool(servers) and len(out) < len(servers)
    if not servers:
        check["reason"] = "the embedding servers are not contacted yet"
    elif out:
        names = "; ".join(f"{s.url}: {s.reason}" for s in out)
        check["reason"] = f"{len(out)} of {len(servers)} embedding servers out: {names}"
    return check
