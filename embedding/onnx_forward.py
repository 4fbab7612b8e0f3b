"""A sentence-transformers encoder's forward pass through ONNX Runtime, on a CPU.

A torch forward releases the GIL for each operator and takes it back after: a few hundred
hand-offs per batch, each a wait in a process whose other threads (an API, a queue
consumer, files being chunked and stored) want the GIL too. In `quarry serve` that made the
same forwards 1.9 times as slow as in the pipeline alone (docs/benchmarks.md,
`bench/gil.py`). ONNX Runtime runs the whole transformer in one native call.

The export (fp32, from the model Quarry has already loaded: no hub) is made once and kept
in `folder` under a name drawn from the weights it was made from; a changed model gets a
new file, never a stale one. Its vectors equal torch's to about 1e-6, so the collection's
recipe and the embedding cache do not change with the engine. A model this path does not
cover (a decoder, another pooling, more modules) raises `EngineUnavailable`: the caller
keeps torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

OPSET = 17
ENCODERS = frozenset({"bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra"})
POOLING = frozenset({"mean", "cls"})
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MAX_EXPORT_BYTES = 1_500_000_000  # one .onnx file holds at most 2 GB


class EngineUnavailable(Exception):
    """ONNX Runtime cannot run this model here (the message says why); torch runs it."""


class OnnxForward:
    """Texts to pooled (not normalised) vectors, as `SentenceTransformer.encode` gives."""

    def __init__(self, model: Any, session: Any, inputs: list[str], pooling: str) -> None:
        self._model = model  # its tokenizer and truncation stay the model's own
        self._session = session
        self._inputs = inputs
        self._pooling = pooling
        self.file: Path | None = None

    @classmethod
    def load(cls, model: Any, folder: Path) -> OnnxForward:
        pooling = _check_supported(model)
        network = model[0].model
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailable("onnxruntime is not installed") from exc
        sample = model.preprocess(["Quarry exports this model once."])
        inputs = [name for name in INPUTS if name in sample]
        target = folder / f"{_fingerprint(network, inputs)}.onnx"
        if not target.exists():
            _export(network, sample, inputs, target)
        import torch

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
        engine = cls(model, session, inputs, pooling)
        engine.file = target
        return engine

    def encode(self, texts: list[str]) -> np.ndarray:
        features = self._model.preprocess(texts)
        feed = {name: features[name].numpy().astype(np.int64) for name in self._inputs}
        (hidden,) = self._session.run(None, feed)
        if self._pooling == "cls":
            return np.asarray(hidden[:, 0], dtype=np.float32)
        mask = features["attention_mask"].numpy().astype(np.float32)[..., None]
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return np.asarray(pooled, dtype=np.float32)


def onnx_or_torch(model: Any, device: str, folder: Path | None, name: str) -> OnnxForward | None:
    """ONNX Runtime for `model`'s forward pass where it can run it (`QUARRY_CPU_BACKEND=onnx`,
    a CPU, a model it covers); None, with a warning saying why, where torch keeps it."""
    if device != "cpu" or folder is None:
        log.warning("QUARRY_CPU_BACKEND=onnx applies on a CPU only; %s runs on torch", name)
        return None
    try:
        return OnnxForward.load(model, folder)
    except EngineUnavailable as exc:
        log.warning("ONNX Runtime cannot run %s (%s); it runs on torch", name, exc)
    except Exception as exc:  # a failed export costs speed, never the model
        log.warning("the ONNX export of %s failed (%s); it runs on torch", name, exc)
    return None


def _check_supported(model: Any) -> str:
    """The pooling mode, when the model is an encoder this path reproduces exactly."""
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
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    axes = {0: "batch", 1: "tokens"}
    log.info("exporting the embedding model to ONNX once: %s", target)
    try:
        # The tracer's warnings (Python branches on shapes, the exporter's deprecation) are
        # expected here; the vectors are compared with torch's in the tests.
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
