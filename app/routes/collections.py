"""Collections with their sizes and embedding recipes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.deps import State
from app.schemas import CollectionOut

router = APIRouter(prefix="/v1", tags=["collections"])


def _collections(state: State) -> list[CollectionOut]:
    store = state.resources.store
    out = []
    for name in store.collections():
        recipe = store.recipe(name)
        out.append(
            CollectionOut(
                name=name,
                documents=len(store.documents(name)),
                chunks=store.count(name),
                recipe=recipe.to_dict() if recipe else None,
            )
        )
    return out


@router.get("/collections")
async def list_collections(state: State) -> dict[str, Any]:
    """Every collection, and the one used when a request names none."""
    return {
        "default": state.settings.collection,
        "collections": await run_in_threadpool(_collections, state),
    }


@router.get("/stats")
async def stats(state: State) -> dict[str, Any]:
    """Cache hit rate, model work and job counts, for dashboards."""
    cache = state.resources.embedder.stats
    looked_up = cache.hits + cache.misses
    model = state.resources.base_embedder.stats if state.resources.model_loaded else None
    return {
        "cache": {
            "hits": cache.hits,
            "misses": cache.misses,
            "errors": cache.errors,
            "hit_rate": round(cache.hits / looked_up, 4) if looked_up else None,
        },
        "model": vars(model) if model else None,
        "jobs": {"queued_or_running": state.jobs.depth, "finished": dict(state.jobs.finished)},
    }
