"""The one settings object, read from `QUARRY_*` environment variables and `.env`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from embedding.instructions import DEFAULT_QUERY_INSTRUCTION
from embedding.lanes import usable_cores


class Settings(BaseSettings):
    """Quarry configuration; with nothing set, everything runs embedded under `data_dir`."""

    model_config = SettingsConfigDict(env_prefix="QUARRY_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    embedding_model: str = Field(
        default="",
        description="hub id or folder; unset: Qwen3-Embedding-4B with a CUDA GPU, else "
        "Qwen3-Embedding-0.6B, else the packaged all-MiniLM-L6-v2 (see embedding/default_model)",
    )
    embedding_revision: str | None = None
    served_model_name: str | None = Field(
        default=None, description="the model's public name, whatever folder it is read from"
    )
    embedding_dim: int | None = Field(default=None, ge=1)
    query_instruction: str = DEFAULT_QUERY_INSTRUCTION
    device: Literal["auto", "cpu", "cuda", "mps"] | str = "auto"
    max_length: int = Field(default=8192, ge=16, description="token cap per model input")
    batch_tokens: int = Field(default=0, ge=0, description="tokens per model batch; 0 = auto")
    bulk_batch_tokens: int = Field(
        default=0, ge=0, description="tokens per model batch while ingesting; 0 = auto"
    )
    cpu_backend: Literal["auto", "torch", "onnx", "openvino"] = Field(
        default="auto",
        description="the engine of a local model's forward pass on a CPU: onnx (ONNX Runtime) "
        "or openvino runs an encoder (MiniLM, BERT-like) exported once into engine_dir and "
        "checked against torch; other models, a missing runtime or a failed export stay on "
        "torch, with a warning; auto: openvino where the CPU has native bf16 and quantize "
        "is auto or bf16, else onnx",
    )
    quantize: Literal["auto", "none", "int8", "bf16"] = Field(
        default="auto",
        description="the precision of that engine: int8 (ONNX Runtime's dynamic int8, made "
        "once from the export), bf16 (OpenVINO on a CPU with native bf16: AMX, AVX512-BF16), "
        "none (fp32: torch's vectors); auto: bf16 where the CPU has it, else int8 (both "
        "within 1.0 SciFact nDCG@10 of fp32, docs/benchmarks.md). int8 and bf16 vectors "
        "differ from fp32's: collections record which they hold and keep being written and "
        "searched with it",
    )
    model_lanes: int = Field(
        default=0,
        ge=0,
        description="forward passes run side by side on a CPU with ONNX Runtime, each on its "
        "share of the cores; 0 = one per core (a busy core then slows one lane, not all)",
    )
    engine_dir: Path | None = Field(
        default=None,
        description="where ONNX exports are kept (named by the weights they come from, so "
        "data dirs may share one); default <data_dir>/engines",
    )
    embedding_urls: str = Field(
        default="",
        description="comma-separated OpenAI-compatible embedding servers, each ending in /v1; "
        "when set, no weights are loaded here",
    )
    embedding_api_key: str | None = None
    remote_batch_tokens: int = Field(default=16384, ge=64, description="tokens per request")
    remote_batch_size: int = Field(default=32, ge=1, description="texts per request")
    remote_in_flight: int = Field(default=4, ge=1, description="requests per server at once")
    remote_timeout_s: float = Field(default=60, gt=0, description="one request's time limit")
    remote_timeout_per_token_s: float = Field(
        default=0.001, ge=0, description="more time a request gets per token it carries"
    )
    remote_retry_s: float = Field(
        default=30, gt=0, description="how long a batch is retried across servers"
    )
    remote_health_interval_s: float = Field(default=5, gt=0)
    remote_eject_after: int = Field(default=3, ge=1, description="consecutive failures")
    sparse_vectors: bool = Field(
        default=True, description="new collections also get BM25 sparse vectors (hybrid search)"
    )
    small_dim: int = Field(
        default=0,
        ge=0,
        description="new collections of a Matryoshka model (Qwen3-Embedding) also store this "
        "prefix of each vector (int8), searched first and rescored on the full vector; 0 = off",
    )
    rrf_k: int = Field(default=60, ge=1, description="reciprocal rank fusion's k for hybrid")
    hybrid_candidates: int = Field(
        default=100, ge=1, le=10_000, description="hits each hybrid prefetch brings to the fusion"
    )
    rerank_model: str | None = Field(
        default=None,
        description="a CrossEncoder or Qwen3-Reranker (folder or hub id); enables rerank",
    )
    rerank_url: str | None = Field(
        default=None, description="a /rerank server (TEI; or infinity/vLLM at a URL ending in /v1)"
    )
    rerank_top_n: int = Field(
        default=50, ge=1, le=1000, description="candidates a reranked search rescores"
    )
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_shard_number: int = Field(default=1, ge=1, description="shards per new collection")
    qdrant_replication_factor: int = Field(default=1, ge=1, description="copies of each shard")
    qdrant_write_consistency_factor: int = Field(
        default=1, ge=1, description="replicas that must confirm a write"
    )
    qdrant_on_disk: bool = Field(default=False, description="vectors and payloads on disk")
    qdrant_quantization: Literal["none", "int8"] = "none"
    qdrant_rescore: bool = Field(default=True, description="re-score quantized hits exactly")
    qdrant_oversampling: float = Field(default=2.0, ge=1.0)
    qdrant_tenant_key: str | None = Field(
        default=None, description="payload key of a tenant id, indexed with is_tenant"
    )
    redis_url: str | None = None
    collection: str = Field(default="quarry", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
    chunk_tokens: int = Field(default=512, ge=16)
    chunk_overlap: int = Field(default=64, ge=0)
    parse_workers: int = Field(default=2, ge=1, le=32)
    parse_timeout_s: float = Field(default=300, gt=0, description="time limit to parse one file")
    parse_memory_mb: int = Field(
        default=3072, ge=256, description="address space of one parse worker process"
    )
    ocr_languages: str = Field(
        default="eng",
        description="Tesseract language packs OCR reads with (`eng+deu`); the script each "
        "page is written in adds its pack when installed",
    )
    ocr_detect_script: bool = Field(
        default=True, description="turn scans upright and add the language of their script"
    )
    ocr_min_confidence: float = Field(
        default=60.0,
        ge=0,
        le=100,
        description="OCR'd pages whose mean word confidence (Tesseract's, 0-100) stays below "
        "this after rereading are kept, marked (ocr_confidence) and named in a warning",
    )
    ocr_dpi: int = Field(default=200, ge=72, le=600, description="PDF pages rendered for OCR")
    ocr_threads: int = Field(default=2, ge=1, le=32, description="pages of one PDF OCR'd at once")
    ocr_page_timeout_s: float = Field(
        default=30, gt=0, description="more time a PDF gets per page (its pages may need OCR)"
    )
    convert_timeout_s: float = Field(
        default=120, gt=0, description="LibreOffice's time limit for a legacy office file"
    )
    workers: int | None = Field(
        default=None,
        ge=0,
        le=256,
        description="`quarry worker` processes the server starts and supervises; unset: one "
        "per core (at most 8, and 1.5 GiB of memory each); 0: none (external workers do it)",
    )
    worker_concurrency: int = Field(
        default=2,
        ge=1,
        le=64,
        description="files a worker takes at once (one is parsed while another is embedded)",
    )
    worker_heartbeat_s: float = Field(
        default=15,
        ge=1,
        description="a worker holding a file is presumed dead this long after "
        "its last heartbeat (it beats every third of this)",
    )
    worker_sweep_s: int = Field(
        default=10, ge=1, description="how often workers look for files held by dead workers"
    )
    worker_grace_s: int = Field(
        default=30,
        ge=0,
        description="on SIGTERM, how long a worker may finish its file before handing it back",
    )
    worker_retry_s: float = Field(
        default=2,
        gt=0,
        description="first wait before a file is retried after a dependency "
        "failed (store, model); it doubles, with jitter",
    )
    worker_retry_max_s: float = Field(
        default=60, gt=0, description="longest wait between two retries of a file"
    )
    queue_name: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_.-]{0,64}$",
        description="the ingestion queue's name in Redis; unset: named after the data dir",
    )
    reconcile_s: float = Field(
        default=5, gt=0, description="how often the API checks the queue against the job state"
    )
    max_inflated_mb: int = Field(
        default=512, ge=1, description="what a zip-based document's parts may inflate to"
    )
    max_hit_chars: int = Field(
        default=20_000, ge=100, description="text returned per search hit, at most"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_keys: str = Field(
        default="",
        description="comma-separated admin bearer keys, without limits (`quarry keys create` "
        "makes scoped ones); no keys at all = an open server",
    )
    key_rps: float = Field(
        default=0, ge=0, description="requests a second a new key may make (0: no limit)"
    )
    key_burst: int = Field(
        default=0, ge=0, description="requests at once above the rate a new key may make"
    )
    key_upload_mb_per_hour: float = Field(
        default=0, ge=0, description="upload megabytes an hour a new key may send (0: no limit)"
    )
    audit_max: int = Field(
        default=1_000_000, ge=1000, description="audit log entries kept (oldest out first)"
    )
    max_file_mb: float = Field(default=100, gt=0, description="largest accepted uploaded file")
    max_upload_mb: float = Field(default=1024, gt=0, description="largest accepted upload request")
    max_body_mb: float = Field(default=16, gt=0, description="largest body of any other request")
    batch_max_items: int = Field(default=64, ge=1, description="texts per merged model batch")
    batch_wait_ms: float = Field(default=2.0, ge=0, description="wait for more requests")
    model_queue_max: int = Field(
        default=2048,
        ge=1,
        description="texts that may wait for the model (searches and /v1/embeddings); past "
        "it they get 429 with Retry-After at once",
    )
    max_embedding_inputs: int = Field(
        default=2048, ge=1, description="texts in one /v1/embeddings request, at most"
    )
    max_embedding_tokens: int = Field(
        default=300_000, ge=1, description="tokens in one /v1/embeddings request, at most"
    )
    ingest_files: int = Field(
        default=0,
        ge=0,
        le=256,
        description="files the server ingests at once (their chunks share model batches); "
        "0: 8 per core, at least 16, at most 64",
    )
    min_free_mb: int = Field(
        default=256,
        ge=0,
        description="free space the data dir keeps: uploads past it get 507, /readyz says "
        "degraded below twice it",
    )
    allow_open: bool = Field(
        default=False,
        description="let `quarry serve` listen on a non-loopback address without API keys",
    )
    sync_roots: str = Field(
        default="",
        description="os.pathsep-separated folders the server's named sources may read "
        "(a client key must not make it index any folder on its disk); empty: no folder "
        "sources through the API (nothing is open by default)",
    )
    sync_buckets: str = Field(
        default="",
        description="comma-separated s3://BUCKET[/PREFIX] the server's named sources may "
        "read with its own credentials; empty: no bucket sources through the API",
    )
    model_roots: str = Field(
        default="",
        description="os.pathsep-separated folders from which a migration asked through the "
        "API may load a model (a client key must not make the server load any folder); "
        "empty: only models known by name (packaged or in the Hugging Face cache)",
    )
    migrate_keep_h: float = Field(
        default=168,
        gt=0,
        description="hours a migrated collection's old version is kept for a rollback",
    )
    job_retention_h: float = Field(
        default=168,
        gt=0,
        description="hours an ended job's record is kept (its documents and originals stay)",
    )

    @property
    def sync_bucket_list(self) -> list[str]:
        return [b.strip().rstrip("/") + "/" for b in self.sync_buckets.split(",") if b.strip()]

    @property
    def model_root_paths(self) -> list[Path]:
        return [Path(p).expanduser().resolve() for p in self.model_roots.split(os.pathsep) if p]

    @property
    def sync_root_paths(self) -> list[Path]:
        return [Path(p).expanduser().resolve() for p in self.sync_roots.split(os.pathsep) if p]

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"QUARRY_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than "
                f"QUARRY_CHUNK_TOKENS ({self.chunk_tokens})"
            )
        if self.qdrant_write_consistency_factor > self.qdrant_replication_factor:
            raise ValueError(
                "QUARRY_QDRANT_WRITE_CONSISTENCY_FACTOR "
                f"({self.qdrant_write_consistency_factor}) must not exceed "
                f"QUARRY_QDRANT_REPLICATION_FACTOR ({self.qdrant_replication_factor})"
            )
        return self

    @field_validator("embedding_urls")
    @classmethod
    def _urls_end_in_v1(cls, value: str) -> str:
        for url in value.split(","):
            url = url.strip().rstrip("/")
            if url and not (url.startswith(("http://", "https://")) and url.endswith("/v1")):
                raise ValueError(
                    f"QUARRY_EMBEDDING_URLS: {url!r} must be an http(s) URL ending in /v1"
                )
        return value

    @property
    def embedding_url_list(self) -> tuple[str, ...]:
        return tuple(u.strip().rstrip("/") for u in self.embedding_urls.split(",") if u.strip())

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"

    @property
    def engine_path(self) -> Path:
        """`engine_dir`, or the data dir's own folder for exports."""
        return self.engine_dir or self.data_dir / "engines"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def originals_dir(self) -> Path:
        return self.data_dir / "originals"

    @property
    def worker_count(self) -> int:
        """QUARRY_WORKERS, or one per core this process may use, as many as 1.5 GiB of
        memory each allows, at most 8."""
        if self.workers is not None:
            return self.workers
        import psutil

        by_memory = int(psutil.virtual_memory().total // (1.5 * 2**30))
        return max(1, min(8, usable_cores(), by_memory))

    @property
    def lease_s(self) -> float:
        """How long a file stays held by a silent holder on another machine (three
        heartbeats); a holder on this machine that died is seen at once by its pid."""
        return 3 * self.worker_heartbeat_s

    @property
    def ingest_slots(self) -> int:
        """Files the server's own consumers take at once: enough that small files, each
        waiting a while for its shared flush (`retrieval.group_commit`), keep the model's
        batches full (on 2 cores, 16 were 10-20 % faster than 8 on 1,000 abstracts)."""
        if self.ingest_files:
            return self.ingest_files
        return min(64, max(16, 8 * usable_cores()))

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(key.strip() for key in self.api_keys.split(",") if key.strip())
