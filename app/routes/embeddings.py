"""OpenAI-compatible embeddings and model list (plus `input_type` and `instruction`)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.deps import State
from app.hangup import client_closed, unless_hung_up
from app.schemas import (
    COMMON_ERRORS,
    EmbeddingItem,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ModelCard,
    ModelList,
    RerankItem,
    RerankRequest,
    RerankResponse,
    Usage,
    error_responses,
)
from embedding.errors import InvalidInputError, PayloadTooLargeError, QuarryError

router = APIRouter(
    prefix="/v1", tags=["embeddings"], responses=COMMON_ERRORS | error_responses(404, 429)
)


class ModelNotFoundError(QuarryError):
    code = "model_not_found"
    status = 404


def _served_names(state: State) -> set[str]:
    """The public name, its short form (`Qwen3-Embedding-4B`), and what was configured."""
    configured = state.settings.embedding_model
    source = state.resources.model_source
    names = {source.model_id, source.short_name}
    return names | {configured, Path(configured).name} if configured else names


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


@router.get("/models", response_model=ModelList)
async def list_models(state: State) -> ModelList:
    """The one embedding model this server runs."""
    loaded = state.resources.model_loaded
    return ModelList(
        data=[
            ModelCard(
                id=state.resources.model_source.model_id,
                dimension=state.resources.base_embedder.dimension if loaded else None,
            )
        ]
    )


async def _check_size(state: State, texts: list[str]) -> None:
    """Bound one request: at most QUARRY_MAX_EMBEDDING_INPUTS texts and
    QUARRY_MAX_EMBEDDING_TOKENS tokens (counted only when the text could pass it)."""
    s = state.settings
    if len(texts) > s.max_embedding_inputs:
        raise PayloadTooLargeError(
            f"input: {len(texts)} texts in one request; at most {s.max_embedding_inputs} "
            "(QUARRY_MAX_EMBEDDING_INPUTS): split it",
            detail={"field": "input", "texts": len(texts), "limit": s.max_embedding_inputs},
        )
    if sum(len(t) for t in texts) <= s.max_embedding_tokens:
        return  # a token is at least a character: it cannot pass the bound
    embedder = state.resources.base_embedder
    limit = embedder.max_tokens
    counts = await run_in_threadpool(embedder.token_counts, texts, None)
    tokens = sum(min(count, limit) for count in counts)
    if tokens > s.max_embedding_tokens:
        raise PayloadTooLargeError(
            f"input: {tokens} tokens in one request; at most {s.max_embedding_tokens} "
            "(QUARRY_MAX_EMBEDDING_TOKENS): split it",
            detail={"field": "input", "tokens": tokens, "limit": s.max_embedding_tokens},
        )


@router.post("/embeddings", response_model=EmbeddingsResponse, response_model_exclude_none=True)
async def create_embeddings(
    state: State, body: EmbeddingsRequest, request: Request
) -> EmbeddingsResponse | Response:
    """Embed texts as documents (default) or as instructed queries."""
    if body.model not in await run_in_threadpool(_served_names, state):
        raise ModelNotFoundError(
            f"model {body.model!r} is not served here; this server runs "
            f"{state.resources.model_source.model_id!r} (see GET /v1/models)",
            detail={"field": "model"},
        )
    texts = [body.input] if isinstance(body.input, str) else body.input
    await _check_size(state, texts)
    instruction = body.instruction if body.input_type == "query" else None
    rows = await unless_hung_up(
        request, state.embed_batcher.submit((body.input_type, instruction), texts)
    )
    if rows is None:
        return client_closed()
    full = int(rows[0][0].shape[0])
    size = body.dimensions or full
    if size > full:
        raise InvalidInputError(
            f"dimensions: {size} is more than the model's {full}", detail={"field": "dimensions"}
        )
    data: list[EmbeddingItem] = []
    for index, (vector, _) in enumerate(rows):
        cut = vector[:size]
        if size < full:  # Matryoshka: a prefix, normalised again
            cut = cut / max(float(np.linalg.norm(cut)), 1e-12)
        data.append(EmbeddingItem(index=index, embedding=_encode(cut, body.encoding_format)))
    tokens = sum(count for _, count in rows)
    return EmbeddingsResponse(
        data=data,
        model=body.model,
        usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
    )


@router.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True)
async def rerank(state: State, body: RerankRequest) -> RerankResponse:
    """Score documents against a query with QUARRY_RERANK_MODEL (the Cohere / vLLM shape)."""
    reranker = await run_in_threadpool(lambda: state.resources.reranker)
    with state.rerank_gate.admit(len(body.documents)):  # 429 at once past the bound
        scores = await run_in_threadpool(
            reranker.rerank, body.query, body.documents, body.instruction
        )
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[: body.top_n]
    return RerankResponse(
        model=state.settings.rerank_model or state.settings.rerank_url or "",
        results=[
            RerankItem(
                index=i,
                relevance_score=scores[i],
                document={"text": body.documents[i]} if body.return_documents else None,
            )
            for i in order
        ],
    )
