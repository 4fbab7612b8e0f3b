"""sentence-transformers backend: Qwen3-Embedding as its authors serve it, or any ST model."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedding.batching import pack_batches
from embedding.errors import ModelLoadError
from embedding.model_inputs import ModelInputs, ModelStats, ensure_trailing_eos
from embedding.model_source import ModelSource
from embedding.priority import Priority, PriorityGate

log = logging.getLogger(__name__)


def _quiet_model_loading() -> None:
    """Weight-loading progress bars belong in logs, not in the CLI's output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class SentenceTransformerEmbedder(ModelInputs):
    """Loads lazily on first use; thread-safe; batches sorted by length and packed to tokens."""

    def __init__(
        self,
        source: ModelSource,
        *,
        dimension: int | None = None,
        max_length: int = 8192,
        device: str = "auto",
        batch_tokens: int = 0,
        bulk_batch_tokens: int = 0,
    ) -> None:
        super().__init__(source, dimension=dimension, max_length=max_length)
        self._device_request = device
        self._batch_tokens = batch_tokens
        self._bulk_tokens = bulk_batch_tokens
        self._gate = PriorityGate()
        self._lock = threading.RLock()
        self._model: Any = None
        self.loads = 0
        self.stats = ModelStats()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._build_model()
                self.loads += 1
            return self._model

    def _build_model(self) -> Any:
        import torch
        from sentence_transformers import SentenceTransformer

        device = pick_device(self._device_request)
        dtype = torch.float32
        if device == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        model_kwargs: dict[str, Any] = {"dtype": dtype}
        tokenizer_kwargs: dict[str, Any] = {}
        if self.source.uses_last_token:
            tokenizer_kwargs["padding_side"] = "left"
        path = str(self.source.path)
        _quiet_model_loading()
        try:
            if self.source.uses_last_token and not (self.source.path / "modules.json").exists():
                model = self._plain_decoder(path, device, model_kwargs, tokenizer_kwargs)
            else:
                params = inspect.signature(SentenceTransformer.__init__).parameters
                kwarg = "processor_kwargs" if "processor_kwargs" in params else "tokenizer_kwargs"
                load_kwargs: dict[str, Any] = {
                    "device": device,
                    "model_kwargs": model_kwargs,
                    "local_files_only": True,
                    kwarg: tokenizer_kwargs,
                }
                model = SentenceTransformer(path, **load_kwargs)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load embedding model {self.source.model_id!r} from {path}: {exc}"
            ) from exc
        model.max_seq_length = self.max_tokens
        getter = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        width = int(getter())
        if self._requested_dim is not None and self._requested_dim > width:
            raise ModelLoadError(
                f"QUARRY_EMBEDDING_DIM={self._requested_dim} is larger than the width of "
                f"{self.source.model_id!r} ({width}); use {width} or less"
            )
        if self.source.uses_last_token:
            ensure_trailing_eos(model.tokenizer)
        model.eval()
        log.info("loaded %s on %s (%s)", self.source.model_id, device, dtype)
        return model

    def _plain_decoder(
        self, path: str, device: str, model_kwargs: dict[str, Any], tok_kwargs: dict[str, Any]
    ) -> Any:
        """A bare transformers Qwen folder: wrap it as Qwen3-Embedding does (last token + L2)."""
        from sentence_transformers import SentenceTransformer

        try:
            from sentence_transformers.sentence_transformer import modules
        except ImportError:  # sentence-transformers < 6
            from sentence_transformers import models as modules  # type: ignore[attr-defined,no-redef]

        kwargs: dict[str, Any] = {"model_kwargs": model_kwargs, "max_seq_length": self.max_tokens}
        if "modality_config" in inspect.signature(modules.Transformer.__init__).parameters:
            # sentence-transformers 6 would otherwise treat a chat model's folder as chat
            # "messages" and wrap every text in the chat template.
            kwargs["modality_config"] = {
                "text": {"method": "forward", "method_output_name": "last_hidden_state"}
            }
            kwargs["module_output_name"] = "token_embeddings"
        transformer = modules.Transformer(path, **kwargs)
        transformer.tokenizer.padding_side = tok_kwargs.get("padding_side", "right")
        pooling = modules.Pooling(transformer.get_word_embedding_dimension(), "lasttoken")
        return SentenceTransformer(
            modules=[transformer, pooling, modules.Normalize()], device=device
        )

    @property
    def dimension(self) -> int:
        if self._requested_dim is not None:
            return self._requested_dim
        model = self._load()
        getter = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        return int(getter())

    @property
    def token_budget(self) -> int:
        """Tokens per model call for queries (latency is short whatever the size)."""
        if self._batch_tokens:
            return self._batch_tokens
        return 65536 if self._on_gpu() else 8192

    @property
    def bulk_token_budget(self) -> int:
        """Tokens per model call for documents: small, so a query never waits long."""
        if self._bulk_tokens:
            return self._bulk_tokens
        return 16384 if self._on_gpu() else 512

    def _on_gpu(self) -> bool:
        return str(self._load().device).startswith("cuda")

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts), Priority.BULK)

    def embed_queries(self, texts: Sequence[str], instruction: str | None) -> np.ndarray:
        return self._encode(self.as_queries(texts, instruction), Priority.QUERY)

    def _encode(self, texts: list[str], priority: Priority) -> np.ndarray:
        model = self._load()
        dim = self.dimension
        out = np.empty((len(texts), dim), dtype=np.float32)
        if not texts:
            return out
        lengths = self.token_counts(texts)
        budget = self.token_budget if priority is Priority.QUERY else self.bulk_token_budget
        for batch in pack_batches(lengths, budget):
            with self._gate.turn(priority):  # one model call per turn: queries cut in between
                started = time.perf_counter()
                vectors = model.encode(
                    [texts[i] for i in batch],
                    batch_size=len(batch),
                    convert_to_numpy=True,
                    normalize_embeddings=False,
                    show_progress_bar=False,
                )
                out[batch] = np.asarray(vectors, dtype=np.float32)[:, :dim]
                self.stats.batches += 1
                self.stats.texts += len(batch)
                self.stats.tokens += sum(lengths[i] for i in batch)
                self.stats.seconds += time.perf_counter() - started
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
        return out
