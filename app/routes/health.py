"""Liveness, readiness and Prometheus metrics (never behind an API key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from app.deps import State
from app.schemas import ReadinessOut

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    """The process is alive and serving HTTP."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadinessOut,
    responses={503: {"model": ReadinessOut, "description": "not ready: the checks say why"}},
)
async def readyz(state: State) -> JSONResponse:
    """Model loaded and store reachable (503 otherwise); `degraded` when Redis is down."""
    readiness = await run_in_threadpool(state.readiness)
    return JSONResponse(
        {"status": readiness.status, "checks": readiness.checks},
        status_code=readiness.http_status,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(state: State) -> Response:
    """Prometheus text format."""
    body = await run_in_threadpool(generate_latest, state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
