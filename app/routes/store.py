"""The embedded store's owner, serving the worker processes that cannot open it themselves.

Internal (hidden from the OpenAPI document) but behind the same API keys: `quarry worker`
reaches it through `retrieval.owner_store.OwnerStore`. With a Qdrant server, workers write
to it directly and these routes go unused.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from starlette.concurrency import run_in_threadpool

from app.deps import State
from app.schemas import COLLECTION_PATTERN
from retrieval.models import CollectionRecipe
from retrieval.owner_store import decode_record

router = APIRouter(prefix="/v1/internal/store", include_in_schema=False)
Collection = Annotated[str, Path(pattern=COLLECTION_PATTERN)]


@router.get("/{collection}/recipe")
async def get_recipe(state: State, collection: Collection) -> dict[str, Any]:
    found = await run_in_threadpool(state.resources.store.recipe, collection)
    return {"recipe": None if found is None else found.to_dict()}


@router.put("/{collection}/recipe")
async def ensure_collection(
    state: State, collection: Collection, recipe: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    wanted = CollectionRecipe.from_dict(recipe)
    await run_in_threadpool(state.resources.store.ensure_collection, collection, wanted)
    return {"ok": True}


@router.get("/{collection}/documents/{doc_id}")
async def get_document(state: State, collection: Collection, doc_id: str) -> dict[str, Any]:
    found = await run_in_threadpool(state.resources.store.document, collection, doc_id)
    return {"document": None if found is None else found.to_dict()}


@router.post("/{collection}/points")
async def upsert(
    state: State, collection: Collection, records: Annotated[list[dict[str, Any]], Body()]
) -> dict[str, Any]:
    decoded = [decode_record(r) for r in records]
    await run_in_threadpool(state.resources.store.upsert, collection, decoded)
    return {"stored": len(decoded)}


@router.post("/{collection}/prune")
async def prune_source(
    state: State, collection: Collection, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    removed = await run_in_threadpool(
        state.resources.store.prune_source,
        collection,
        str(body["source"]),
        str(body["keep_doc_id"]),
        int(body["keep_chunks"]),
    )
    return {"removed": removed}


@router.post("/{collection}/optimize")
async def optimize(state: State, collection: Collection) -> dict[str, Any]:
    await run_in_threadpool(state.resources.store.optimize, collection)
    return {"ok": True}
