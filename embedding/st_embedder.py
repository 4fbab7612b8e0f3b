"""sentence-transformers backend: Qwen3-Embedding as its authors serve it, or any ST model."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedding.batching import pack_batches
from embedding.cpu_runtimes import planned_label
from embedding.errors import ModelLoadError
from embedding.lanes import Lanes, usable_cores
from embedding.model_inputs import ModelInputs, ModelStats, ensure_trailing_eos
from embedding.model_source import ModelSource
from embedding.onnx_forward import OnnxForward, onnx_or_torch
from embedding.priority import Priority
from embedding.protocol import EmbeddingRecipe

if TYPE_CHECKING:  # torch loads with the model, not with this module
    import torch

    from embedding.packed_qwen import PackedBatch, PackedQwen3

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
        packed: bool | None = None,
        engine: str = "torch",
        engine_dir: Path | None = None,
        lanes: int = 0,
        quantize: str = "none",
    ) -> None:
        super().__init__(source, dimension=dimension, max_length=max_length)
        self._device_request = device
        self._batch_tokens = batch_tokens
        self._bulk_tokens = bulk_batch_tokens
        self._packed_request = packed  # None: packed on CUDA for a Qwen3 model
        self._packed: PackedQwen3 | None = None
        self._engine_request = engine  # "onnx", "openvino": that runtime on a CPU, where it fits
        self._quantize = quantize  # "int8": its dynamically quantized model
        self._engine_dir = engine_dir
        self._onnx: OnnxForward | None = None
        self._lanes_request = lanes  # 0: one per core where the engine runs side by side
        self._lanes = Lanes(1)
        self._stats_lock = threading.Lock()
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
        if device == "cpu":  # torch counts the machine's cores, not a container's quota
            torch.set_num_threads(min(torch.get_num_threads(), usable_cores()))
        self._packed = self._packing(model, device)
        if self._engine_request != "torch" and self._packed is None:
            cores = usable_cores()
            lanes = min(self._lanes_request or cores, cores)
            threads = max(1, cores // lanes)
            self._onnx = onnx_or_torch(
                model,
                device,
                self._engine_dir,
                self.source.model_id,
                threads,
                lanes,
                self._engine_request,
                self._quantize,
            )
            if self._onnx is not None:
                self._lanes = Lanes(lanes)
        elif self._quantize != "none":
            log.warning(
                "QUARRY_QUANTIZE=%s needs QUARRY_CPU_BACKEND=onnx or openvino on a CPU; "
                "%s runs unquantized",
                self._quantize,
                self.source.model_id,
            )
        backend = f", packed batches, {self._packed.backend}" if self._packed else ""
        if self._onnx:
            kind = f", {self._onnx.label}" if self._onnx.label else ""
            backend += f", {self._engine_request}{kind} in {self._lanes.count} lane(s)"
        log.info("loaded %s on %s (%s%s)", self.source.model_id, device, dtype, backend)
        return model

    def loaded_recipe(self) -> EmbeddingRecipe:
        """The recipe of the vectors it makes, the model loaded where the engine it plans
        changes them (the runtime might not run it after all: then they are fp32)."""
        if self._model is None and super().recipe.engine:
            self._load()
        return self.recipe

    @property
    def vectors_engine(self) -> str:
        """The engine, where it changes the vectors (int8): what it runs once loaded (a
        runtime that could not run it left torch's fp32 vectors); before, what it plans."""
        if self._model is not None:
            return self._onnx.label if self._onnx is not None else ""
        device = pick_device(self._device_request)
        return planned_label(self._engine_request, self._quantize, self.source.model_type, device)

    def _packing(self, model: Any, device: str) -> PackedQwen3 | None:
        """The padding-free path, for a Qwen3 model served as Qwen3-Embedding is (last
        token, normalised); by default on CUDA, where padding costs GPU time."""
        wanted = self._packed_request
        if wanted is None:
            wanted = device.startswith("cuda")
        if not wanted or self.source.model_type != "qwen3":
            return None
        modules = [type(m).__name__ for m in model]
        inner = getattr(model[0], "auto_model", None)
        config = getattr(inner, "config", None)
        pooling = model[1] if len(model) > 1 else None
        last_token = getattr(pooling, "pooling_mode", None) == "lasttoken" or getattr(
            pooling, "pooling_mode_lasttoken", False
        )  # sentence-transformers 6 / 5
        if (
            modules[1:] != ["Pooling", "Normalize"]
            or not last_token
            or config is None
            or getattr(config, "use_sliding_window", False)
            or not hasattr(inner, "layers")
        ):
            log.warning("packed batches need a plain Qwen3 model (last token, normalised)")
            return None
        from embedding.packed_qwen import PackedQwen3

        return PackedQwen3(inner)

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
    def lanes(self) -> int:
        """Model calls that run at once: one per core on ONNX Runtime, else one."""
        self._load()
        return self._lanes.count

    @property
    def token_budget(self) -> int:
        """Tokens per model call for queries (latency is short whatever the size)."""
        if self._batch_tokens:
            return self._batch_tokens
        return self._fits(65536) if self._on_gpu() else 8192

    @property
    def bulk_token_budget(self) -> int:
        """Tokens per model call for documents: small, so a query never waits long."""
        if self._bulk_tokens:
            return self._bulk_tokens
        return self._fits(16384) if self._on_gpu() else 512

    def _fits(self, wanted: int) -> int:
        """`wanted`, or fewer tokens when the GPU's free memory cannot hold a forward of that
        many (hidden states, attention and MLP activations, with room to spare)."""
        import torch

        free, _total = torch.cuda.mem_get_info(self._load().device)
        return max(512, min(wanted, int(0.5 * free / self._bytes_per_token)))

    @cached_property
    def _bytes_per_token(self) -> int:
        """Activation memory of one token in a forward (16-bit), from the model's config."""
        config = self.source.read_json("config.json")
        hidden = int(config.get("hidden_size") or 1024)
        mlp = int(config.get("intermediate_size") or 4 * hidden)
        return 2 * (12 * hidden + 3 * mlp)

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
        batches = pack_batches(lengths, budget, padded=self._packed is None)
        if self._packed is not None:
            self._encode_packed(model, texts, batches, lengths, priority, out)
            return out

        def forward(batch: list[int]) -> None:
            started = time.perf_counter()
            chosen = [texts[i] for i in batch]
            vectors = (
                self._onnx.encode(chosen)
                if self._onnx is not None
                else model.encode(
                    chosen,
                    batch_size=len(batch),
                    convert_to_numpy=True,
                    normalize_embeddings=False,
                    show_progress_bar=False,
                )
            )
            out[batch] = np.asarray(vectors, dtype=np.float32)[:, :dim]
            self._count(batch, lengths, started)

        # one model call per turn, queries cut in between; ingest batches spread over lanes
        self._lanes.run([partial(forward, batch) for batch in batches], priority)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
        return out

    def _count(self, batch: Sequence[int], lengths: Sequence[int], started: float) -> None:
        """Counts a model call; `seconds` adds up every lane's time."""
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.texts += len(batch)
            self.stats.tokens += sum(lengths[i] for i in batch)
            self.stats.seconds += time.perf_counter() - started

    def _encode_packed(
        self,
        model: Any,
        texts: list[str],
        batches: list[list[int]],
        lengths: Sequence[int],
        priority: Priority,
        out: np.ndarray,
    ) -> None:
        """Packed forwards; the next batch is tokenized on a thread meanwhile."""
        import torch

        from embedding.packed_qwen import pack_features, split_on_oom

        packed = self._packed
        assert packed is not None
        dim = out.shape[1]

        def tokenize(rows: Sequence[int]) -> PackedBatch:
            features = model.tokenize([texts[i] for i in rows])
            return pack_features(features["input_ids"], features["attention_mask"])

        def run(rows: Sequence[int]) -> torch.Tensor:
            return packed.embed(tokenize(rows), dim)

        with ThreadPoolExecutor(1, thread_name_prefix="tokenize") as ahead:
            upcoming = ahead.submit(tokenize, batches[0]) if batches else None
            for index, batch in enumerate(batches):
                assert upcoming is not None
                ready = upcoming.result()
                if index + 1 < len(batches):
                    upcoming = ahead.submit(tokenize, batches[index + 1])
                with self._lanes.gate.turn(priority):
                    started = time.perf_counter()
                    parts: list[tuple[Sequence[int], torch.Tensor]]
                    try:
                        parts = [(batch, packed.embed(ready, dim))]
                    except torch.OutOfMemoryError:
                        parts = split_on_oom(run, batch)
                    for rows, vectors in parts:
                        out[list(rows)] = vectors.numpy()
                    self._count(batch, lengths, started)
