"""Remote backend: OpenAI-compatible `/v1/embeddings` servers (SGLang, vLLM, TEI, infinity,
Quarry) behind client-side balancing, giving the same vectors as the in-process model.

None of those servers applies Qwen3's query instruction, and they differ on `dimensions`,
so both happen here: queries are phrased client-side, full vectors are asked for and cut
and normalised again here. Documents get no instruction. The tokenizer is loaded locally
(files only) for chunking, batch budgets and cutting over-long inputs.
"""

from __future__ import annotations

import base64
import logging
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from embedding.balancer import Balancer, HealthChecker, RequestObserver, describe
from embedding.batching import pack_batches
from embedding.errors import EmbeddingServerError, EmbeddingUnavailableError
from embedding.model_inputs import ModelInputs, ModelStats
from embedding.model_source import ModelSource
from embedding.priority import Priority

log = logging.getLogger(__name__)

# How SGLang, vLLM, TEI and Quarry word "this input or batch is too long".
_TOO_LONG = re.compile(
    r"context length|too long|too large|maximum (context|allowed)|must have less than|batch size",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RemoteOptions:
    """How to reach and load-balance the servers (see `Settings` for each knob)."""

    urls: tuple[str, ...]
    model_name: str
    api_key: str | None = None
    batch_tokens: int = 16384  # TEI's default max_batch_tokens
    batch_size: int = 32  # TEI's default max_client_batch_size
    in_flight: int = 4  # per server
    timeout_s: float = 60.0
    timeout_per_token_s: float = 0.001  # a request's timeout grows with its size
    retry_s: float = 30.0
    health_interval_s: float = 5.0
    eject_after: int = 3


class _TooLarge(Exception):
    def __init__(self, server: str, message: str) -> None:
        super().__init__(message)
        self.server = server


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Full-jitter exponential backoff (AWS architecture blog), in seconds."""
    return random.uniform(0, min(cap, base * 2**attempt))


class RemoteEmbedder(ModelInputs):
    """An `Embedder` whose model runs on other machines."""

    def __init__(
        self,
        source: ModelSource,
        options: RemoteOptions,
        *,
        dimension: int | None = None,
        max_length: int = 8192,
        observer: RequestObserver | None = None,
    ) -> None:
        super().__init__(source, dimension=dimension, max_length=max_length)
        self.options = options
        count = len(options.urls)
        self.balancer = Balancer(
            options.urls,
            max_in_flight=options.in_flight,
            eject_after=options.eject_after,
            observer=observer,
        )
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        slots = count * (options.in_flight + 1)
        self._client = httpx.Client(
            headers=headers,
            timeout=options.timeout_s,
            limits=httpx.Limits(max_connections=slots + count, max_keepalive_connections=slots),
        )
        self.health = HealthChecker(
            self.balancer,
            lambda: self._client,
            interval=options.health_interval_s,
            timeout=min(2.0, options.timeout_s),
        )
        self._bulk_pool = ThreadPoolExecutor(slots, thread_name_prefix="embed-bulk")
        self._query_pool = ThreadPoolExecutor(count + 2, thread_name_prefix="embed-query")
        self._stats_lock = threading.Lock()
        self._width = source.native_dimension
        self.loads = 0
        self.stats = ModelStats()
        self.health.start()

    @property
    def dimension(self) -> int:
        if self._requested_dim is not None:
            return self._requested_dim
        if self._width is None:
            self._width = int(self._send(["dimension probe"], Priority.QUERY).shape[1])
        return self._width

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(list(texts), Priority.BULK)

    def embed_queries(self, texts: Sequence[str], instruction: str | None) -> np.ndarray:
        return self._embed(self.as_queries(texts, instruction), Priority.QUERY)

    def close(self) -> None:
        self.health.stop()
        self._bulk_pool.shutdown(wait=False, cancel_futures=True)
        self._query_pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # -- one call: fit, pack, send in parallel, cut ------------------------------------
    def _embed(self, texts: list[str], priority: Priority) -> np.ndarray:
        dim = self.dimension
        out = np.empty((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        texts, lengths = self._fit(texts)
        batches = pack_batches(lengths, self.options.batch_tokens, self.options.batch_size)
        pool = self._query_pool if priority is Priority.QUERY else self._bulk_pool
        futures = [
            pool.submit(self._send_split, [texts[i] for i in batch], priority) for batch in batches
        ]
        for batch, future in zip(batches, futures, strict=True):
            full = future.result()
            if full.shape[1] < dim:
                raise EmbeddingServerError(
                    f"the embedding servers return {full.shape[1]}-dimensional vectors; "
                    f"QUARRY_EMBEDDING_DIM={dim} asks for more"
                )
            out[batch] = full[:, :dim]
            with self._stats_lock:
                self.stats.tokens += sum(lengths[i] for i in batch)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
        return out

    def _fit(self, texts: list[str]) -> tuple[list[str], list[int]]:
        """Cut texts longer than the model reads at a token boundary, as local truncation
        would; return them with their token counts (special tokens included)."""
        keep = self.max_tokens - self.special_tokens()
        fitted, lengths = [], []
        for text, tokens in zip(texts, self.tokenizer.encode(texts), strict=True):
            if len(tokens.ids) > keep:
                text = text[: tokens.offsets[keep - 1][1]]
            fitted.append(text)
            lengths.append(min(len(tokens.ids), keep) + self.max_tokens - keep)
        return fitted, lengths

    def _send_split(self, texts: list[str], priority: Priority) -> np.ndarray:
        """Send one batch; a batch a server finds too large is halved and sent again."""
        try:
            return self._send(texts, priority)
        except _TooLarge as exc:
            if len(texts) == 1:
                raise EmbeddingServerError(
                    f"{exc.server} refused one input as too long ({exc}); set "
                    "QUARRY_MAX_LENGTH to the servers' limit so Quarry cuts inputs to it"
                ) from exc
            half = len(texts) // 2
            return np.vstack(
                [self._send_split(texts[:half], priority), self._send_split(texts[half:], priority)]
            )

    # -- one request, retried on other servers -----------------------------------------
    def _send(self, texts: list[str], priority: Priority) -> np.ndarray:
        options = self.options
        deadline = time.monotonic() + options.retry_s
        tried: set[str] = set()
        last_error = "all servers busy"
        attempt = 0
        payload = {"model": options.model_name, "input": texts, "encoding_format": "float"}
        while True:
            left = deadline - time.monotonic()
            backend = self.balancer.acquire(priority, tried, timeout=max(0.0, left))
            if backend is None:
                # A search fails at once when every server is out; ingestion waits a while.
                if time.monotonic() >= deadline or (
                    priority is Priority.QUERY and self.balancer.all_ejected()
                ):
                    out = self.balancer.out_of_service() or last_error
                    raise EmbeddingUnavailableError(
                        f"no embedding server answered within {options.retry_s:g} s: {out}",
                        detail={"servers": list(options.urls)},
                    )
                self.balancer.wait_for_admission(min(1.0, max(0.0, left)))
                continue
            started = time.perf_counter()
            try:
                response = self._client.post(
                    backend.url + "/embeddings", json=payload, timeout=self._timeout(texts)
                )
                vectors = self._read(backend.url, response, len(texts))
            except (_TooLarge, EmbeddingServerError):  # the server worked; the input did not
                self.balancer.release(backend, time.perf_counter() - started, ok=True)
                raise
            except (httpx.HTTPError, _Retry) as exc:
                last_error = describe(exc) if isinstance(exc, httpx.HTTPError) else str(exc)
                server_fault = not isinstance(exc, _Retry) or exc.server_fault
                kind = (
                    "slow"
                    if isinstance(exc, httpx.TimeoutException)
                    else "down"
                    if isinstance(exc, httpx.ConnectError)
                    else "error"
                )
                self.balancer.release(
                    backend,
                    time.perf_counter() - started,
                    ok=not server_fault,
                    reason=last_error,
                    kind=kind,
                )
                tried.add(backend.url)
                pause = backoff(attempt)
                # Past the deadline, with no server left untried: they answer, never well.
                if time.monotonic() + pause >= deadline and not self.balancer.untried(tried):
                    raise EmbeddingUnavailableError(
                        f"no embedding server answered within {options.retry_s:g} s: {last_error}",
                        detail={"servers": list(options.urls)},
                    ) from exc
                log.info("embedding request to %s failed (%s); retrying", backend.url, last_error)
                time.sleep(pause)
                attempt += 1
                continue
            seconds = time.perf_counter() - started
            self.balancer.release(backend, seconds, ok=True)
            with self._stats_lock:
                self.loads = self.loads or 1
                self.stats.batches += 1
                self.stats.texts += len(texts)
                self.stats.seconds += seconds
            return vectors

    def _timeout(self, texts: list[str]) -> httpx.Timeout:
        """A request's time follows its size: the base, plus time per token (estimated from
        the characters, a token being a few of them), so a large batch on a loaded server
        is not cut short; connecting keeps its own short limit."""
        tokens = sum(len(text) for text in texts) / 3
        total = self.options.timeout_s + tokens * self.options.timeout_per_token_s
        return httpx.Timeout(total, connect=min(5.0, self.options.timeout_s))

    def _read(self, server: str, response: httpx.Response, expected: int) -> np.ndarray:
        status = response.status_code
        if status == 200:
            return self._vectors(server, response, expected)
        text = response.text[:300]
        if status == 413 or (status in (400, 422) and _TOO_LONG.search(text)):
            raise _TooLarge(server, f"HTTP {status}: {text}")
        if status in (408, 429) or status >= 500:
            raise _Retry(f"{server} answered {status}: {text}", server_fault=status != 429)
        raise EmbeddingServerError(
            f"{server} refused the request ({status}): {text}",
            detail={"server": server, "status": status},
        )

    def _vectors(self, server: str, response: httpx.Response, expected: int) -> np.ndarray:
        try:
            items = sorted(response.json()["data"], key=lambda item: int(item["index"]))
            rows = [_decode(item["embedding"]) for item in items]
            vectors = np.vstack(rows).astype(np.float32, copy=False)
        except (ValueError, KeyError, TypeError) as exc:
            raise _Retry(f"{server} sent an unreadable answer: {exc}") from exc
        if len(rows) != expected:
            raise _Retry(f"{server} sent {len(rows)} vectors for {expected} inputs")
        if self._width is not None and vectors.shape[1] != self._width:
            raise _Retry(
                f"{server} sends {vectors.shape[1]}-dimensional vectors, the model's are "
                f"{self._width} (is it serving another model?)"
            )
        return vectors


class _Retry(Exception):
    """A failed exchange worth sending elsewhere; `server_fault` counts toward ejection."""

    def __init__(self, message: str, *, server_fault: bool = True) -> None:
        super().__init__(message)
        self.server_fault = server_fault


def _decode(embedding: Any) -> np.ndarray:
    if isinstance(embedding, str):  # encoding_format=base64, whatever was asked
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)
