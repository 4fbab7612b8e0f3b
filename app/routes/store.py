"""The embedded store's owner, serving `quarry worker` processes beside it.

Internal (hidden from the OpenAPI document) and closed to every client key: only the data
dir's own worker credential passes (`app.limits.ApiKeyGuard`), and every body is typed and
validated. `quarry worker` reaches it through `retrieval.owner_store.OwnerStore`. The
server's own queue consumers never use it (they own the store); with a Qdrant server,
workers write to it directly and these routes go unused.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.deps import State
from app.schemas import COLLECTION_PATTERN
from embedding.errors import InvalidInputError
from retrieval.models import ChunkRecord, CollectionRecipe
from retrieval.sparse import SparseVec

router = APIRouter(prefix="/v1/internal/store", include_in_schema=False)
Collection = Annotated[str, Path(pattern=COLLECTION_PATTERN)]
DocId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PointIn(_Body):
    id: str = Field(min_length=1, max_length=64)
    vector: str = Field(description="float32 little-endian, base64")
    payload: dict[str, Any]
    sparse: tuple[list[int], list[float]] | None = None
    scheme: str = Field(default="", max_length=200, description="the BM25 scheme of `sparse`")
    vectors: str = Field(
        default="", max_length=400, description="the recipe `vector` was embedded for"
    )

    def record(self) -> ChunkRecord:
        try:
            raw = base64.b64decode(self.vector, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInputError("vector: not base64", detail={"field": "vector"}) from exc
        if not raw or len(raw) % 4:
            raise InvalidInputError("vector: not float32 values", detail={"field": "vector"})
        sparse = None
        if self.sparse is not None:
            indices, values = self.sparse
            if len(indices) != len(values):
                raise InvalidInputError("sparse: indices and values differ in length")
            sparse = SparseVec(tuple(indices), tuple(values))
        vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        return ChunkRecord(self.id, vector, dict(self.payload), sparse, self.scheme, self.vectors)


class PruneIn(_Body):
    source: str = Field(min_length=1)
    keep_doc_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    keep_chunks: int = Field(ge=0)
    seq: int = Field(default=0, ge=0)


class NewerIn(_Body):
    source: str = Field(min_length=1)
    doc_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    seq: int = Field(ge=0)


class StampIn(_Body):
    doc_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    seq: int = Field(ge=0)


@router.get("/{collection}/recipe")
async def get_recipe(state: State, collection: Collection) -> dict[str, Any]:
    found = await run_in_threadpool(state.resources.store.recipe, collection)
    return {"recipe": None if found is None else found.to_dict()}


@router.put("/{collection}/recipe")
async def ensure_collection(
    state: State, collection: Collection, recipe: dict[str, Any]
) -> dict[str, Any]:
    try:
        wanted = CollectionRecipe.from_dict(recipe)
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"recipe: {exc}", detail={"field": "recipe"}) from exc
    await run_in_threadpool(state.resources.store.ensure_collection, collection, wanted)
    return {"ok": True}


@router.get("/{collection}/documents/{doc_id}")
async def get_document(state: State, collection: Collection, doc_id: DocId) -> dict[str, Any]:
    found = await run_in_threadpool(state.resources.store.document, collection, doc_id)
    return {"document": None if found is None else found.to_dict()}


@router.delete("/{collection}/documents/{doc_id}")
async def delete_document(state: State, collection: Collection, doc_id: DocId) -> dict[str, Any]:
    removed = await run_in_threadpool(state.resources.store.delete_document, collection, doc_id)
    return {"removed": removed}


@router.post("/{collection}/points")
async def upsert(state: State, collection: Collection, points: list[PointIn]) -> dict[str, Any]:
    decoded = [point.record() for point in points]
    await run_in_threadpool(state.resources.store.upsert, collection, decoded)
    return {"stored": len(decoded)}


@router.post("/{collection}/prune")
async def prune_source(state: State, collection: Collection, body: PruneIn) -> dict[str, Any]:
    removed = await run_in_threadpool(
        state.resources.store.prune_source,
        collection,
        body.source,
        body.keep_doc_id,
        body.keep_chunks,
        body.seq,
    )
    return {"removed": removed}


@router.post("/{collection}/newer")
async def newer_version(state: State, collection: Collection, body: NewerIn) -> dict[str, Any]:
    store = state.resources.store
    newer = await run_in_threadpool(
        store.newer_version, collection, body.source, body.doc_id, body.seq
    )
    return {"newer": newer}


@router.post("/{collection}/stamp")
async def stamp_version(state: State, collection: Collection, body: StampIn) -> dict[str, Any]:
    await run_in_threadpool(state.resources.store.stamp_version, collection, body.doc_id, body.seq)
    return {"ok": True}


@router.post("/{collection}/optimize")
async def optimize(state: State, collection: Collection) -> dict[str, Any]:
    await run_in_threadpool(state.resources.store.optimize, collection)
    return {"ok": True}
