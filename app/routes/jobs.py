"""Ingestion job progress, as JSON or as a server-sent event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.access import Access
from app.deps import State
from app.schemas import COMMON_ERRORS, error_responses
from ingest.jobs import Job
from retrieval.errors import NotFoundError

router = APIRouter(prefix="/v1", tags=["jobs"], responses=COMMON_ERRORS | error_responses(404, 409))
_JOB_OK: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}}}
}
JobId = Annotated[str, Path(description="a job id (32 hex digits)")]


def _job(state: State, job_id: JobId, access: Access) -> Job:
    job = state.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}", detail={"job_id": job_id})
    access.collection(job.collection)
    return job


def _as_json(job: Job) -> Response:
    """The job as the API shows it, encoded here (in a worker thread, by `json`): a job of
    thousands of files, polled, must not walk through FastAPI's encoder on the event loop."""
    return Response(json.dumps(job.to_public()), media_type="application/json")


def _job_json(state: State, job_id: str, access: Access) -> Response:
    return _as_json(_job(state, job_id, access))


@router.get("/jobs")
async def list_jobs(
    state: State, access: Access, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> dict[str, Any]:
    """The most recent jobs (of the collections this key may use), newest first."""
    jobs = await run_in_threadpool(state.jobs.recent, limit)
    return {"jobs": [job.to_public() for job in jobs if access.sees(job.collection)]}


@router.get("/jobs/{job_id}", response_class=Response, responses=_JOB_OK)
async def get_job(state: State, access: Access, job_id: JobId) -> Response:
    """State, per-stage counts, chunks/s, ETA, and each file's progress, worker and error."""
    return await run_in_threadpool(_job_json, state, job_id, access)


@router.delete("/jobs/{job_id}")
async def cancel_job(state: State, access: Access, job_id: JobId) -> dict[str, Any]:
    """Cancel a queued, retrying or running job (409 once it has ended).

    A running file's parse worker is stopped; files already stored stay stored.
    """
    await run_in_threadpool(_job, state, job_id, access)
    job = await run_in_threadpool(state.jobs.cancel, job_id)
    return job.to_public()


@router.post("/jobs/{job_id}/retry", status_code=202)
async def retry_job(state: State, access: Access, job_id: JobId) -> dict[str, Any]:
    """Run the failed files of an ended job again from their kept originals (no re-upload)."""
    await run_in_threadpool(_job, state, job_id, access)
    job = await state.jobs.retry(job_id)
    return job.to_public()


def _event(kind: str, data: Callable[[], dict[str, Any]], event_id: int) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data())}\n\n"


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse)
async def job_events(
    state: State, access: Access, job_id: JobId, request: Request
) -> StreamingResponse:
    """The job as server-sent events: `progress` on every change, then one `end`."""
    await run_in_threadpool(_job, state, job_id, access)

    async def stream() -> AsyncIterator[str]:
        seen = -1
        idle = 0.0
        while True:
            job = await run_in_threadpool(state.jobs.get, job_id)
            if job is None:
                return
            if job.version != seen or idle >= 15:
                seen, idle = job.version, 0.0
                yield await run_in_threadpool(_event, "progress", job.to_public, job.version)
            if job.finished:
                yield await run_in_threadpool(_event, "end", job.to_public, job.version)
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
