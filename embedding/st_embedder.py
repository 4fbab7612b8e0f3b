"""sentence-transformers backend: Qwen3-Embedding as its authors serve it, or any ST model."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedding.batching import pack_batches
from embedding.errors import ModelLoadError
from embedding.instructions import format_query
from embedding.model_source import ModelSource
from embedding.priority import Priority, PriorityGate
from embedding.protocol import EmbeddingRecipe
from embedding.tokenizers import PerThreadTokenizer

log = logging.getLogger(__name__)

# Qwen3-Embedding's own tokenizer appends this to every input; last-token pooling reads it.
QWEN_EOS = "<|endoftext|>"


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


def ensure_trailing_eos(tokenizer: Any) -> None:
    """Make a Qwen tokenizer append `<|endoftext|>` if its files do not already do so."""
    from tokenizers import processors

    eos_id = tokenizer.convert_tokens_to_ids(QWEN_EOS)
    if tokenizer("a")["input_ids"][-1:] == [eos_id]:
        return
    backend = tokenizer.backend_tokenizer
    template = processors.TemplateProcessing(
        single=f"$A:0 {QWEN_EOS}:0",
        pair=f"$A:0 {QWEN_EOS}:0 $B:1 {QWEN_EOS}:1",
        special_tokens=[(QWEN_EOS, eos_id)],
    )
    current = backend.post_processor
    backend.post_processor = (
        processors.Sequence([current, template]) if current is not None else template
    )
    if tokenizer("a")["input_ids"][-1:] != [eos_id]:
        raise ModelLoadError("could not make the Qwen tokenizer append <|endoftext|>")


@dataclass
class ModelStats:
    """Work done by the model since start: what /metrics reports."""

    batches: int = 0
    texts: int = 0
    tokens: int = 0
    seconds: float = 0.0


class SentenceTransformerEmbedder:
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
        self.source = source
        self._requested_dim = dimension
        self._max_length_cap = max_length
        self._device_request = device
        self._batch_tokens = batch_tokens
        self._bulk_tokens = bulk_batch_tokens
        self._gate = PriorityGate()
        self._lock = threading.RLock()
        self._model: Any = None
        self._tokenizer: Any = None
        self.loads = 0
        self.stats = ModelStats()
        if dimension is not None and source.uses_last_token and not 32 <= dimension <= 1 << 16:
            raise ModelLoadError(f"QUARRY_EMBEDDING_DIM={dimension} is outside 32..65536")

    @property
    def recipe(self) -> EmbeddingRecipe:
        return EmbeddingRecipe(
            model=self.source.model_id,
            revision=self.source.revision,
            dimension=self._requested_dim,
            normalize=True,
            max_length=self._max_length_cap,
            takes_instruction=self.source.uses_last_token,
        )

    @property
    def max_tokens(self) -> int:
        """Longest input the model sees, special tokens included."""
        own = self.source.max_seq_length or self._max_length_cap
        return min(own, self._max_length_cap)

    @property
    def tokenizer(self) -> Any:
        """This thread's copy of the tokenizer (no weights), for counting tokens.

        Never the model's own instance, which only the model thread touches: a fast
        tokenizer's call reconfigures it, so threads must not share one.
        """
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = PerThreadTokenizer(self.load_tokenizer())
        return self._tokenizer.get()

    def load_tokenizer(self) -> Any:
        """A new tokenizer instance of this model, for a caller to own."""
        from transformers import AutoTokenizer

        kwargs: dict[str, Any] = {"padding_side": "left"} if self.source.uses_last_token else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(self.source.path), **kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the tokenizer of {self.source.model_id!r}: {exc}"
            ) from exc
        if self.source.uses_last_token:
            ensure_trailing_eos(tokenizer)
        return tokenizer

    def special_tokens(self) -> int:
        """Tokens the tokenizer adds around a text (CLS/SEP, or Qwen's trailing EOS)."""
        return int(self.tokenizer.num_special_tokens_to_add(pair=False))

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
        if not self.source.uses_last_token:
            instruction = None
        return self._encode([format_query(instruction, text) for text in texts], Priority.QUERY)

    def token_counts(self, texts: Sequence[str], instruction: str | None = None) -> list[int]:
        """Tokens the model reads for each text (as queries when `instruction` is given)."""
        if instruction is not None and self.source.uses_last_token:
            texts = [format_query(instruction, text) for text in texts]
        encoded = self.tokenizer(
            list(texts), add_special_tokens=True, truncation=True, max_length=self.max_tokens
        )["input_ids"]
        return [len(ids) for ids in encoded]

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
