"""Collections with their sizes and embedding recipes."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from app.access import Access
from app.deps import State
from app.schemas import COLLECTION_PATTERN, COMMON_ERRORS, CollectionOut, error_responses
from retrieval.summaries import summarize_collections

router = APIRouter(prefix="/v1", tags=["collections"], responses=COMMON_ERRORS)


def _collections(state: State) -> list[CollectionOut]:
    return [CollectionOut(**vars(s)) for s in summarize_collections(state.resources.store)]


@router.get("/collections")
async def list_collections(state: State, access: Access) -> dict[str, Any]:
    """Every collection (this key may use), and the one used when a request names none."""
    return {
        "default": state.settings.collection,
        "collections": [
            c for c in await run_in_threadpool(_collections, state) if access.sees(c.name)
        ],
    }


@router.post("/collections/{name}/sparse", responses=error_responses(404))
async def backfill_sparse(
    state: State, access: Access, name: Annotated[str, Path(pattern=COLLECTION_PATTERN)]
) -> dict[str, Any]:
    """Give a collection built before BM25 vectors existed its sparse vectors (hybrid and
    sparse search), or rebuild them in the current analyser, computed from its stored
    chunk text without re-embedding anything."""
    access.collection(name)
    updated = await run_in_threadpool(state.resources.backfill_sparse, name)
    return {"collection": name, "chunks_updated": updated}


@router.get("/stats")
async def stats(state: State) -> dict[str, Any]:
    """Cache hit rate, model work and job counts, for dashboards."""
    cache = state.cache_stats()
    looked_up = cache.hits + cache.misses
    model = state.model_stats()
    return {
        "cache": {
            "hits": cache.hits,
            "misses": cache.misses,
            "errors": cache.errors,
            "hit_rate": round(cache.hits / looked_up, 4) if looked_up else None,
        },
        "model": vars(model) if model else None,
        "jobs": {"queued_or_running": state.jobs.depth, "finished": dict(state.jobs.finished)},
        "queue": asdict(state.jobs.snapshot),
    }
