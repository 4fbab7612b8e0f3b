"""Rerankers: score (query, passage) pairs after retrieval, most relevant highest.

Three backends behind one protocol: a sentence-transformers CrossEncoder, Qwen3-Reranker
(a causal LM asked "yes" or "no", scored as p(yes) exactly as its model card does), and a
remote `/rerank` server (TEI, infinity, vLLM, or Quarry).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from embedding.batching import pack_batches
from embedding.errors import EmbeddingServerError, EmbeddingUnavailableError, ModelLoadError
from embedding.model_source import resolve_model

DEFAULT_RERANK_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)
# Qwen3-Reranker's prompt, from its model card: a system turn, the user turn built by
# `qwen3_pair`, and an assistant turn opened with an empty think block.
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def qwen3_pair(instruction: str | None, query: str, passage: str) -> str:
    return (
        f"<Instruct>: {instruction or DEFAULT_RERANK_INSTRUCTION}\n"
        f"<Query>: {query}\n<Document>: {passage}"
    )


class Reranker(Protocol):
    def rerank(
        self, query: str, passages: Sequence[str], instruction: str | None = None
    ) -> list[float]:
        """One score per passage, in the passages' order."""
        ...


def _device(requested: str) -> str:
    from embedding.st_embedder import pick_device

    return pick_device(requested)


class Qwen3Reranker:
    """Qwen/Qwen3-Reranker-* (or any Qwen3 causal LM laid out like it), loaded on first use."""

    def __init__(
        self, path: Path, *, device: str = "auto", max_length: int = 8192, batch_tokens: int = 0
    ) -> None:
        self.path = path
        self.max_length = max_length
        self._device_request = device
        self._batch_tokens = batch_tokens
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._loaded is None:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer

                device = _device(self._device_request)
                dtype = torch.bfloat16 if device == "cuda" else torch.float32
                try:
                    tokenizer = AutoTokenizer.from_pretrained(str(self.path), padding_side="left")
                    loader: Any = AutoModelForCausalLM
                    model = loader.from_pretrained(str(self.path), dtype=dtype)
                except Exception as exc:
                    raise ModelLoadError(
                        f"cannot load the reranker {str(self.path)!r}: {exc}"
                    ) from exc
                self._loaded = (tokenizer, model.to(device).eval())
            return self._loaded

    def rerank(
        self, query: str, passages: Sequence[str], instruction: str | None = None
    ) -> list[float]:
        import torch

        if not passages:
            return []
        tokenizer, model = self._load()
        prefix = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
        suffix = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)
        yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
        encoded = tokenizer(
            [qwen3_pair(instruction, query, p) for p in passages],
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.max_length - len(prefix) - len(suffix),
        )["input_ids"]
        inputs = [prefix + ids + suffix for ids in encoded]
        scores = np.empty(len(inputs), dtype=np.float64)
        budget = self._batch_tokens or (32768 if str(model.device).startswith("cuda") else 4096)
        for batch in pack_batches([len(ids) for ids in inputs], budget):
            padded = tokenizer.pad(
                {"input_ids": [inputs[i] for i in batch]}, padding=True, return_tensors="pt"
            ).to(model.device)
            with torch.no_grad():
                last = model(**padded).logits[:, -1, :]
            pair = torch.stack([last[:, no], last[:, yes]], dim=1).float()
            scores[batch] = torch.log_softmax(pair, dim=1)[:, 1].exp().cpu().numpy()
        return [float(s) for s in scores]


class CrossEncoderReranker:
    """Any sentence-transformers CrossEncoder, loaded on first use."""

    def __init__(self, path: Path, *, device: str = "auto", max_length: int = 512) -> None:
        self.path = path
        self.max_length = max_length
        self._device_request = device
        self._lock = threading.Lock()
        self._model: Any = None

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                from sentence_transformers import CrossEncoder

                try:
                    self._model = CrossEncoder(
                        str(self.path),
                        device=_device(self._device_request),
                        max_length=self.max_length,
                        local_files_only=True,
                    )
                except Exception as exc:
                    raise ModelLoadError(
                        f"cannot load the reranker {str(self.path)!r}: {exc}"
                    ) from exc
            return self._model

    def rerank(
        self, query: str, passages: Sequence[str], instruction: str | None = None
    ) -> list[float]:
        if not passages:
            return []
        model = self._load()
        order = sorted(range(len(passages)), key=lambda i: len(passages[i]))  # less padding
        scores = model.predict(
            [(query, passages[i]) for i in order], batch_size=32, show_progress_bar=False
        )
        out = np.empty(len(passages), dtype=np.float64)
        out[order] = np.asarray(scores, dtype=np.float64).reshape(len(passages), -1)[:, -1]
        return [float(s) for s in out]


class RemoteReranker:
    """A `/rerank` server: TEI's shape (`texts`, a list of {index, score}) at a bare URL, the
    Cohere shape of infinity and vLLM (`documents`, {results: [{index, relevance_score}]})
    at a URL ending in `/v1`."""

    def __init__(
        self, url: str, model: str, *, api_key: str | None = None, timeout_s: float = 60
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s)

    def rerank(
        self, query: str, passages: Sequence[str], instruction: str | None = None
    ) -> list[float]:
        if not passages:
            return []
        cohere = self.url.endswith("/v1")
        body: dict[str, Any] = (
            {"model": self.model, "query": query, "documents": list(passages)}
            if cohere
            else {"query": query, "texts": list(passages), "raw_scores": False}
        )
        if instruction and cohere:
            body["instruction"] = instruction  # Quarry's own servers take it; others ignore
        try:
            response = self._client.post(f"{self.url}/rerank", json=body)
        except httpx.HTTPError as exc:
            raise EmbeddingUnavailableError(
                f"the reranker at {self.url} did not answer: {exc}"
            ) from exc
        if response.status_code != 200:
            raise EmbeddingServerError(
                f"the reranker at {self.url} answered {response.status_code}: {response.text[:300]}"
            )
        data = response.json()
        items = data["results"] if isinstance(data, dict) else data
        scores = [0.0] * len(passages)
        for item in items:
            scores[int(item["index"])] = float(item.get("relevance_score", item.get("score")))
        return scores


def load_reranker(
    name: str, *, device: str = "auto", max_length: int = 8192, url: str | None = None
) -> Reranker:
    """A reranker from QUARRY_RERANK_MODEL (a folder or hub id) or QUARRY_RERANK_URL.

    Raises:
        ModelLoadError: the model is neither on disk nor downloadable, with what to set.
    """
    if url:
        return RemoteReranker(url, name)
    try:
        source = resolve_model(name)
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"Cannot load the reranker {name!r}: it is not a local folder, not in the Hugging "
            "Face cache, and could not be downloaded. Set QUARRY_RERANK_MODEL to a local "
            "CrossEncoder or Qwen3-Reranker folder, or QUARRY_RERANK_URL to a /rerank server.",
            detail={"model": name},
        ) from exc
    if source.uses_last_token:  # a Qwen3 causal LM: the yes/no reranker
        return Qwen3Reranker(source.path, device=device, max_length=max_length)
    return CrossEncoderReranker(source.path, device=device, max_length=min(max_length, 512))
