"""Query-instructed semantic search, merged into shared model batches."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request, Response

from app.access import Access
from app.deps import State
from app.hangup import client_closed, unless_hung_up
from app.schemas import COMMON_ERRORS, SearchRequest, SearchResponse, error_responses
from app.service import search_answer
from app.state import SearchKey
from embedding.instructions import PRESETS

router = APIRouter(
    prefix="/v1", tags=["search"], responses=COMMON_ERRORS | error_responses(404, 409, 429)
)


@router.post("/search", response_model=SearchResponse)
async def search(
    state: State, access: Access, body: SearchRequest, request: Request
) -> SearchResponse | Response:
    """Top-k chunks for a query, with each stage's timing."""
    started = time.perf_counter()
    collection = access.collection(body.collection or state.settings.collection)
    key = SearchKey(
        collection,
        body.instruction,
        body.top_k,
        json.dumps(body.filters, sort_keys=True),
        body.score_threshold,
        body.mode,
        body.rrf_k,
        body.weights,
        body.rerank,
        body.rerank_top_n,
        body.vectors,
        body.profile,
    )
    answers = await unless_hung_up(request, state.search_batcher.submit(key, [body.query]))
    if answers is None:
        return client_closed()
    [result] = answers
    timings = dict(result.timings_ms)
    timings["total_ms"] = (time.perf_counter() - started) * 1000
    # The profile's extra runs are outside the answer's own stages (search_ms holds them).
    profiled = {"total_ms", "prefetch_dense_ms", "prefetch_sparse_ms", "fusion_ms"}
    stages = sum(v for k, v in timings.items() if k.endswith("_ms") and k not in profiled)
    timings["queue_ms"] = max(timings["total_ms"] - stages, 0)
    return search_answer(result, body.query, collection, state.settings.max_hit_chars, timings)


@router.get("/instructions")
async def instructions(state: State) -> dict[str, Any]:
    """Query instruction presets (Qwen3 models follow them; others ignore them)."""
    return {
        "default": state.settings.query_instruction,
        "presets": dict(PRESETS),
        "model_takes_instructions": state.resources.model_source.uses_last_token,
    }
