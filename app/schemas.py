"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from embedding.errors import InvalidInputError
from retrieval.models import SearchHit
from retrieval.search import MAX_TOP_K

M = TypeVar("M", bound=BaseModel)

COLLECTION_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"  # no leading dot: never ".."
# Exact matches on keywords, integers and booleans (Qdrant matches no floats exactly).
FilterValue = str | int | bool | list[str | int | bool]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=8192, description="what to look for")
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K)
    filters: dict[str, FilterValue] = Field(
        default_factory=dict,
        description="exact-match filters: doc_id, source, or any metadata key (a list = any of)",
    )
    instruction: str | None = Field(
        default=None, max_length=1024, description="task instruction (default: the collection's)"
    )
    score_threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    collection: str | None = Field(default=None, pattern=COLLECTION_PATTERN)
    mode: Literal["dense", "sparse", "hybrid"] | None = Field(
        default=None,
        description="dense vectors, BM25 terms, or both fused by RRF (default: hybrid when "
        "the collection has BM25 vectors, else dense)",
    )
    rrf_k: int | None = Field(default=None, ge=1, le=1000, description="RRF's k (hybrid)")
    weights: tuple[float, float] | None = Field(
        default=None, description="hybrid: the weight of the dense and of the BM25 ranking"
    )

    vectors: Literal["full", "small", "two-stage"] | None = Field(
        default=None,
        description="dense search on the full vector, the small Matryoshka one, or the small "
        "one's candidates rescored on the full (the default where a small one is stored)",
    )
    rerank: bool = Field(
        default=False, description="score the candidates again with QUARRY_RERANK_MODEL"
    )
    rerank_top_n: int | None = Field(
        default=None, ge=1, le=MAX_TOP_K, description="candidates to rerank (default 50)"
    )
    profile: bool = Field(
        default=False,
        description="hybrid: also time each prefetch alone (prefetch_dense_ms, "
        "prefetch_sparse_ms) and the fusion's share (fusion_ms)",
    )

    @field_validator("weights")
    @classmethod
    def _positive(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not all(0 < w <= 100 for w in value):
            raise ValueError("each weight must be above 0 and at most 100")
        return value

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is empty")
        return value


class Hit(BaseModel):
    score: float
    doc_id: str
    chunk_id: str
    chunk_index: int
    source: str
    page: int | None
    text: str
    metadata: dict[str, Any]
    ocr: bool = Field(default=False, description="the text was read from a scan or image (OCR)")
    ocr_confidence: float | None = Field(
        default=None,
        description="OCR: Tesseract's mean word confidence (0-100) on the least sure page of "
        "the text; below QUARRY_OCR_MIN_CONFIDENCE the text may be wrong",
    )
    truncated: bool = Field(default=False, description="text cut at QUARRY_MAX_HIT_CHARS")

    @classmethod
    def bounded(cls, hit: SearchHit, max_chars: int) -> Hit:
        """A hit whose text is at most `max_chars` long (a search answer stays small)."""
        fields = vars(hit) | {"truncated": len(hit.text) > max_chars}
        fields["text"] = hit.text[:max_chars]
        return cls(**fields)


class SearchResponse(BaseModel):
    query: str
    collection: str
    instruction: str
    mode: str = Field(description="how it was searched: dense, sparse or hybrid")
    language: str | None = Field(
        default=None, description="the query's language, when it changed how hybrid fused"
    )
    weights: tuple[float, float] | None = Field(
        default=None, description="[dense, sparse] weights used, when not the defaults"
    )
    note: str | None = Field(default=None, description="why it was searched so")
    hits: list[Hit]
    timings_ms: dict[str, float]


class Accepted(BaseModel):
    job_id: str
    collection: str
    accepted: list[str]
    rejected: list[dict[str, str]]
    status_url: str
    events_url: str


class DocumentOut(BaseModel):
    doc_id: str
    source: str
    file_type: str
    size_bytes: int
    chunks: int
    expected_chunks: int
    complete: bool
    ingested_at: str
    metadata: dict[str, Any]
    chunk_list: list[Hit] | None = Field(default=None, description="with ?include_chunks=true")


class DocumentPage(BaseModel):
    collection: str
    total: int
    offset: int
    limit: int
    documents: list[DocumentOut]


class Deleted(BaseModel):
    doc_id: str
    deleted_chunks: int


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request, plus `input_type` and `instruction`."""

    input: str | list[str] = Field(description="one text or a list of texts")
    model: str
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    input_type: Literal["query", "document"] = Field(
        default="document", description="queries get the instruction; documents never do"
    )
    instruction: str | None = Field(default=None, max_length=1024)

    @field_validator("input")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input is an empty list")
        if len(texts) > 2048:
            raise ValueError(f"at most 2048 inputs per request, got {len(texts)}")
        for position, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"input #{position} is empty")
        return value


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "quarry"
    dimension: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CollectionOut(BaseModel):
    name: str
    documents: int
    chunks: int
    recipe: dict[str, Any] | None


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable")
    message: str = Field(description="readable; names the file or field and the reason")
    detail: Any = None


class ErrorBody(BaseModel):
    """The one shape of every error answer."""

    error: ErrorDetail


class ReadinessOut(BaseModel):
    status: Literal["ready", "degraded", "not_ready"]
    checks: dict[str, dict[str, Any]]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all in the one error shape."""
    said = {
        401: "missing or invalid API key (when QUARRY_API_KEYS is set)",
        404: "no such document, job, collection or model",
        409: "conflicts with the collection's recipe or the job's state",
        413: "the request body or a file is over its size limit",
        415: "unsupported file type",
        422: "invalid input: the field and the reason",
        429: "too many requests waiting for the model",
        500: "unexpected server error",
        503: "the model, the store or an embedding server is unavailable",
        507: "the data dir has no room for the upload (nothing of it was kept)",
    }
    return {status: {"model": ErrorBody, "description": said[status]} for status in statuses}


# Every /v1 route can answer these.
COMMON_ERRORS = error_responses(401, 413, 422, 500, 503)


class RerankRequest(BaseModel):
    """The Cohere / vLLM / infinity `/rerank` body (plus Quarry's `instruction`)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    query: str = Field(min_length=1, max_length=8192)
    documents: list[str] = Field(min_length=1, max_length=1000)
    top_n: int | None = Field(default=None, ge=1)
    instruction: str | None = Field(default=None, max_length=1024)
    return_documents: bool = False


class RerankItem(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, str] | None = None


class RerankResponse(BaseModel):
    model: str
    results: list[RerankItem]


def checked_body(model: type[M], spec: dict[str, Any], what: str) -> M:
    """`spec` checked as the API checks a body (for the CLI's local verbs).

    Raises:
        InvalidInputError: naming the first field that is wrong.
    """
    try:
        return model(**spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or what
        raise InvalidInputError(f"{where}: {first['msg']}", detail={"field": where}) from exc
