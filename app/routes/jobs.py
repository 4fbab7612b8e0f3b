"""Ingestion job progress, as JSON or as a server-sent event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.deps import State
from app.schemas import COMMON_ERRORS, error_responses
from ingest.jobs import Job
from retrieval.errors import NotFoundError

router = APIRouter(prefix="/v1", tags=["jobs"], responses=COMMON_ERRORS | error_responses(404, 409))
JobId = Annotated[str, Path(description="a job id (32 hex digits)")]


def _job(state: State, job_id: JobId) -> Job:
    job = state.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}", detail={"job_id": job_id})
    return job


@router.get("/jobs")
async def list_jobs(
    state: State, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> dict[str, Any]:
    """The most recent jobs, newest first."""
    jobs = await run_in_threadpool(state.jobs.recent, limit)
    return {"jobs": [job.to_public() for job in jobs]}


@router.get("/jobs/{job_id}")
async def get_job(state: State, job_id: JobId) -> dict[str, Any]:
    """State, per-stage counts, chunks/s, ETA, and each file's progress, worker and error."""
    job = await run_in_threadpool(_job, state, job_id)
    return job.to_public()


@router.delete("/jobs/{job_id}")
async def cancel_job(state: State, job_id: JobId) -> dict[str, Any]:
    """Cancel a queued, retrying or running job (409 once it has ended).

    A running file's parse worker is stopped; files already stored stay stored.
    """
    job = await run_in_threadpool(state.jobs.cancel, job_id)
    return job.to_public()


@router.post("/jobs/{job_id}/retry", status_code=202)
async def retry_job(state: State, job_id: JobId) -> dict[str, Any]:
    """Run the failed files of an ended job again from their kept originals (no re-upload)."""
    job = await state.jobs.retry(job_id)
    return job.to_public()


def _event(kind: str, data: dict[str, Any], event_id: int) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse)
async def job_events(state: State, job_id: JobId, request: Request) -> StreamingResponse:
    """The job as server-sent events: `progress` on every change, then one `end`."""
    await run_in_threadpool(_job, state, job_id)

    async def stream() -> AsyncIterator[str]:
        seen = -1
        idle = 0.0
        while True:
            job = await run_in_threadpool(state.jobs.get, job_id)
            if job is None:
                return
            if job.version != seen or idle >= 15:
                seen, idle = job.version, 0.0
                yield _event("progress", job.to_public(), job.version)
            if job.finished:
                yield _event("end", job.to_public(), job.version)
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.25)
            idle += 0.25

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
