"""A sentence-transformers encoder's forward pass through ONNX Runtime or OpenVINO, on a
CPU, fp32, int8 or bf16 (`embedding/cpu_runtimes.py`).

A torch forward releases the GIL for each operator and takes it back after: a few hundred
hand-offs per batch, each a wait in a process whose other threads (an API, a queue
consumer, files being chunked and stored) want the GIL too. In `quarry serve` that made the
same forwards 1.9 times as slow as in the pipeline alone (docs/benchmarks.md,
`bench/gil.py`). ONNX Runtime runs the whole transformer in one native call.

The export (fp32, from the model Quarry has already loaded: no hub) is made once and kept
in `folder` under a name drawn from the weights it was made from; a changed model gets a
new file, never a stale one. Before use, its vectors are compared with torch's on a padded
batch (within 1e-4; MiniLM lands at ~1e-7), so the collection's recipe and the embedding
cache do not change with an fp32 engine. An int8 model (made once from the export) gives
other vectors: it is checked to point near torch's (cosine >= 0.95; MiniLM ~0.99), and
its `label` goes into the recipe and the cache key. A model this path does not cover (a
decoder, another pooling, more modules, a default prompt), a runtime not installed, or an
export that does not match raises `EngineUnavailable`: the caller keeps torch. The
session holds its own copy of the weights, beside torch's (MiniLM: ~90 MB more).

Several threads may run forwards at once, one per lane (`embedding/lanes.py`), each on
`threads` cores (how each runtime does it: `cpu_runtimes.sessions`). Tokenizing goes one
call at a time (a fast tokenizer's settings are shared state).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from embedding.cpu_runtimes import (
    ENCODERS,
    RUNTIMES,
    EngineUnavailable,
    bf16_unavailable,
    quantized,
    sessions,
    vectors_label,
)

log = logging.getLogger(__name__)

OPSET = 17
POOLING = frozenset({"mean", "cls"})
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MAX_EXPORT_BYTES = 1_500_000_000  # one .onnx file holds at most 2 GB
CHECK_TOLERANCE = 1e-4  # fp32 exports land near 1e-7; a wrong graph is off by far more
MIN_QUANTIZED_COSINE = 0.95  # int8 MiniLM lands near 0.99 of torch's vectors
ABANDONED_S = 3600  # a partial export this old was left by a process that died


class OnnxForward:
    """Texts to pooled (not normalised) vectors, as `SentenceTransformer.encode` gives."""

    def __init__(self, model: Any, sessions: list[Any], inputs: list[str], pooling: str) -> None:
        self._model = model  # its tokenizer and truncation stay the model's own
        self._sessions: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for session in sessions:  # one per lane (the same one for single-core lanes)
            self._sessions.put(session)
        self._inputs = inputs
        self._pooling = pooling
        self._tokenizing = threading.Lock()
        self.label = ""  # what the recipe records: "" where the vectors are torch's

    @classmethod
    def load(
        cls,
        model: Any,
        folder: Path,
        threads: int = 0,
        lanes: int = 1,
        runtime: str = "onnx",
        quantize: str = "none",
    ) -> OnnxForward:
        """The engine for `model`, exported into `folder` unless it is there already, and
        checked against torch on a padded batch before it is used; `lanes` forwards at once,
        each on `threads` cores (0: torch's count), on `runtime` (onnx, openvino), fp32,
        int8 or bf16 (`quantize`)."""
        pooling = _check_supported(model)
        _check_runtime(runtime)
        if quantize == "bf16" and (why := bf16_unavailable(runtime)):
            raise EngineUnavailable(why)
        network = model[0].model
        sample = model.preprocess(["Quarry exports this model once."])
        inputs = [name for name in INPUTS if name in sample]
        target = folder / f"{_fingerprint(network, inputs)}.onnx"
        threads = threads or _torch_threads()
        _drop_abandoned(folder)
        if target.exists():
            try:  # a file left damaged (a full disk, a bad copy) is made again, once
                return cls._built(model, target, inputs, pooling, threads, lanes, runtime, quantize)
            except EngineUnavailable:
                if quantize != "none":  # the int8 model is off, not the export: keep it
                    raise
                target.unlink(missing_ok=True)
            except Exception as exc:
                log.warning("the ONNX export %s is unusable (%s); exporting again", target, exc)
                target.unlink(missing_ok=True)
                target.with_name(f"{target.stem}-int8.onnx").unlink(missing_ok=True)
        _export(network, sample, inputs, target)
        return cls._built(model, target, inputs, pooling, threads, lanes, runtime, quantize)

    @classmethod
    def _built(
        cls,
        model: Any,
        fp32: Path,
        inputs: list[str],
        pooling: str,
        threads: int,
        lanes: int,
        runtime: str,
        quantize: str,
    ) -> OnnxForward:
        path = quantized(fp32) if quantize == "int8" else fp32
        lane_sessions = sessions(path, runtime, threads, lanes, bf16=quantize == "bf16")
        engine = cls(model, lane_sessions, inputs, pooling)
        engine.label = vectors_label(runtime, quantize)
        return engine._checked(path)

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._tokenizing:  # the whole batch at once: one call, not one per text
            features = self._model.preprocess(texts)
        feed = {name: features[name].numpy().astype(np.int64) for name in self._inputs}
        mask = features["attention_mask"].numpy()
        if not self.label or len(texts) == 1:
            return self._forward(feed, mask)
        # int8 quantizes activations per run (one scale for the whole batch), and bf16
        # rounds differently as the shapes change, so a text's vector would depend on its
        # neighbours and their padding: each text runs alone, its own tokens only (what it
        # gives alone), which on a one-core lane is also the fastest (no padding).
        rows = []
        for row in range(len(texts)):
            own = mask[row] > 0
            alone = {name: value[row : row + 1, own] for name, value in feed.items()}
            rows.append(self._forward(alone, mask[row : row + 1, own]))
        return np.vstack(rows)

    def _forward(self, feed: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
        session = self._sessions.get()
        try:
            (hidden,) = session.run(None, feed)
        finally:
            self._sessions.put(session)
        if self._pooling == "cls":  # the first token the mask keeps, as sentence-transformers
            return np.asarray(hidden[np.arange(len(hidden)), mask.argmax(axis=1)], np.float32)
        weights = mask.astype(np.float32)[..., None]
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return np.asarray(pooled, dtype=np.float32)

    def _checked(self, target: Path) -> OnnxForward:
        """Self, once its vectors point where torch's do on texts of unequal lengths
        (padding, and truncation past the model's limit); otherwise the file goes and torch
        stays. Compared as unit vectors: a Normalize module in the model normalises torch's
        side, and the embedder normalises both after its cut."""
        import torch

        texts = ["A short one.", "A longer sentence, " * 8, "past the limit " * 400]
        with torch.inference_mode():
            expected = np.asarray(
                self._model.encode(texts, convert_to_numpy=True, normalize_embeddings=False)
            )
        found = _unit(self.encode(texts))
        if self.label:  # int8, bf16: near torch's, not equal (a wrong graph is far off)
            worst = float((found * _unit(expected)).sum(axis=1).min())
            if worst < MIN_QUANTIZED_COSINE:
                target.unlink(missing_ok=True)
                raise EngineUnavailable(
                    f"its {self.label} model is off torch's (cosine {worst:.3f})"
                )
            return self
        gap = float(np.abs(found - _unit(expected)).max())
        if gap > CHECK_TOLERANCE:
            target.unlink(missing_ok=True)
            raise EngineUnavailable(f"its ONNX export differs from torch by {gap:.1e}")
        return self


def onnx_or_torch(
    model: Any,
    device: str,
    folder: Path | None,
    name: str,
    threads: int = 0,
    lanes: int = 1,
    runtime: str = "onnx",
    quantize: str = "none",
) -> OnnxForward | None:
    """`runtime` (ONNX Runtime, OpenVINO) for `model`'s forward pass where it can run it
    (`QUARRY_CPU_BACKEND`, a CPU, a model it covers), int8 or bf16 where `quantize` says
    so; None, with a warning saying why, where torch keeps it (and its fp32 vectors)."""
    wanted = f"QUARRY_CPU_BACKEND={runtime}"
    if device != "cpu":  # the default engine on a CPU; a GPU keeps torch, as it should
        log.info("%s applies on a CPU only; %s runs on torch", wanted, name)
        return None
    if folder is None:
        log.warning("%s needs a folder for its export; %s runs on torch", wanted, name)
        return None
    try:
        return OnnxForward.load(model, folder, threads, lanes, runtime, quantize)
    except EngineUnavailable as exc:
        log.warning("%s cannot run %s (%s); it runs on torch", wanted, name, exc)
    except Exception as exc:  # a failed export costs speed, never the model
        log.warning("the export of %s for %s failed (%s); it runs on torch", name, wanted, exc)
    return None


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _torch_threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def _check_runtime(runtime: str) -> None:
    module = RUNTIMES.get(runtime)
    if module is None:
        raise EngineUnavailable(f"{runtime!r} is not a runtime this path knows")
    try:
        __import__(module)
    except ImportError as exc:
        raise EngineUnavailable(f"{module} is not installed") from exc


def _check_supported(model: Any) -> str:
    """The pooling mode, when the model is an encoder this path reproduces exactly."""
    if not hasattr(model, "preprocess"):
        raise EngineUnavailable("this path needs sentence-transformers 6 (its `preprocess`)")
    if getattr(model, "default_prompt_name", None):
        raise EngineUnavailable(f"it prepends its default prompt {model.default_prompt_name!r}")
    names = [type(module).__name__ for module in model]
    if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
        raise EngineUnavailable(f"its modules are {names}, not Transformer, Pooling[, Normalize]")
    pooling = str(getattr(model[1], "pooling_mode", ""))
    if pooling not in POOLING:
        raise EngineUnavailable(f"its pooling is {pooling!r}, not one of {sorted(POOLING)}")
    config = getattr(model[0].model, "config", None)
    kind = str(getattr(config, "model_type", ""))
    if kind not in ENCODERS or getattr(config, "is_decoder", False):
        raise EngineUnavailable(f"a {kind or 'custom'} model is not an encoder this path exports")
    size = sum(p.numel() * p.element_size() for p in model[0].model.parameters())
    if size > MAX_EXPORT_BYTES:
        raise EngineUnavailable(f"its weights ({size / 1e9:.1f} GB) are too large for one file")
    return pooling


def _fingerprint(network: Any, inputs: list[str]) -> str:
    """What the export is made of: the weights, the inputs, torch and the opset."""
    import torch

    digest = hashlib.sha256(f"{torch.__version__}|{OPSET}|{','.join(inputs)}".encode())
    digest.update(str(network.config.to_json_string()).encode())
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy())
    return f"{network.config.model_type}-{digest.hexdigest()[:24]}"


def _export(network: Any, sample: dict[str, Any], inputs: list[str], target: Path) -> None:
    """Export `network` to `target` (written beside it, then renamed: another process
    exporting the same model at the same time leaves one whole file either way)."""
    import torch

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.network(**dict(zip(inputs, tensors, strict=True)))[0]

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.stem}.", suffix=".partial"
    )
    os.close(handle)
    partial = Path(partial_name)
    axes = {0: "batch", 1: "tokens"}
    log.info("exporting the embedding model to ONNX once: %s", target)
    try:
        # The tracer's warnings (Python branches on shapes, the exporter's deprecation) are
        # expected; what matters is checked after: the export's vectors against torch's.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Hidden().eval(),
                tuple(sample[name] for name in inputs),
                str(partial),
                input_names=inputs,
                output_names=["hidden"],
                dynamic_axes={**dict.fromkeys(inputs, axes), "hidden": axes},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _drop_abandoned(folder: Path) -> None:
    """Partial exports of processes that died mid-way (old enough that none is running)."""
    now = time.time()
    for leftover in folder.glob(".*.partial") if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > ABANDONED_S:
                leftover.unlink()
