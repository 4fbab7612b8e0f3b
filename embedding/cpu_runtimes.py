"""The runtimes an exported encoder runs on, on a CPU: ONNX Runtime or OpenVINO, fp32,
int8 (dynamic quantization of the fp32 export, made once beside it) or bf16 (OpenVINO on a
CPU that computes in bf16 itself: AMX, AVX512-BF16).

Every runtime's session answers `run(None, feed) -> [hidden]`, as ONNX Runtime's does, so
`OnnxForward` runs any of them alike. fp32 on either runtime gives torch's vectors (checked
at every load); int8 and bf16 give other vectors, which the collection's recipe and the
embedding cache record (`vectors_label`).

`auto` (the default of both settings) picks by the measurements of docs/benchmarks.md: bf16
on OpenVINO where the CPU has it (1.26 times ONNX Runtime int8's tokens/s on one core, and
nearer fp32: cosine 0.99998 against int8's 0.995), else ONNX Runtime int8.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}  # and the module each needs
ENCODERS = frozenset({"bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra"})


class EngineUnavailable(Exception):
    """This runtime cannot run this model here (the message says why); torch runs it."""


def vectors_label(runtime: str, quantize: str) -> str:
    """What a collection's recipe records of the engine: nothing where the vectors are
    torch's (fp32 on any runtime), the runtime and quantization where they are not."""
    return "" if quantize == "none" else f"{runtime}-{quantize}"


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes in bf16 itself, as OpenVINO sees it (AMX, AVX512-BF16);
    False where OpenVINO is not installed."""
    if not _installed("openvino"):
        return False
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # a broken install: no bf16, and the reason in the log
        log.warning("OpenVINO cannot say whether this CPU has bf16 (%s)", exc)
        return False


def choose_engine(runtime: str, quantize: str, bf16: bool | None = None) -> tuple[str, str]:
    """The runtime and precision that QUARRY_CPU_BACKEND and QUARRY_QUANTIZE name, `auto`
    resolved for this CPU (`bf16`: whether it has native bf16; default: ask OpenVINO):
    bf16 on OpenVINO where the CPU has it, else int8 on ONNX Runtime; torch runs fp32."""
    if runtime == "auto":
        if quantize == "bf16" or (quantize == "auto" and _has_bf16(bf16)):
            runtime = "openvino"
        else:
            runtime = "onnx"
    if quantize == "auto":
        if runtime == "torch":
            quantize = "none"
        elif runtime == "openvino":
            quantize = "bf16" if _has_bf16(bf16) else "none"  # its int8 is no faster here
        else:
            quantize = "int8"
    return runtime, quantize


def _has_bf16(bf16: bool | None) -> bool:
    return native_bf16() if bf16 is None else bf16


def bf16_unavailable(runtime: str) -> str | None:
    """Why bf16 cannot run on `runtime` here, or None when it can."""
    if runtime != "openvino":
        return "bf16 runs on OpenVINO only (QUARRY_CPU_BACKEND=openvino or auto)"
    if not native_bf16():
        return "this CPU has no native bf16 (AMX or AVX512-BF16)"
    return None


def planned_label(runtime: str, quantize: str, model_type: str, device: str) -> str:
    """The `vectors_label` a model of `model_type` will get on `device`, known without
    loading it: what its collections record before the model is needed (an unchanged
    re-run loads none). Where the runtime then cannot run it after all (a failed export),
    the loaded embedder says what it runs, and its vectors are stored as such."""
    module = RUNTIMES.get(runtime)
    if quantize == "none" or module is None or device != "cpu" or model_type not in ENCODERS:
        return ""
    if quantize == "bf16" and bf16_unavailable(runtime):
        return ""  # it will run fp32 on torch
    return vectors_label(runtime, quantize) if _installed(module) else ""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # blocked, or a broken install
        return False


def quantized(fp32: Path) -> Path:
    """The int8 model of the fp32 export `fp32` (weights int8 per channel, activations
    quantized per run as they come: no calibration set), made once beside it."""
    target = fp32.with_name(f"{fp32.stem}-int8.onnx")
    if target.exists():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic

    handle, partial_name = tempfile.mkstemp(
        dir=fp32.parent, prefix=f".{target.stem}.", suffix=".partial"
    )
    os.close(handle)
    partial = Path(partial_name)
    log.info("quantizing the embedding model to int8 once: %s", target)
    try:
        # The quantizer logs every tensor it skips, and advice, on the root logger itself
        # (a logger's filter sees only its own records: other modules' still go out).
        root = logging.getLogger()
        root.addFilter(_quiet)
        try:
            quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.removeFilter(_quiet)
        os.replace(partial, target)  # another process doing the same leaves one whole file
    finally:
        partial.unlink(missing_ok=True)
    return target


def _quiet(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def sessions(path: Path, runtime: str, threads: int, lanes: int, bf16: bool = False) -> list[Any]:
    """One session per lane, each on `threads` cores. ONNX Runtime: single-core lanes share
    one session (its `run` is thread-safe and, on one thread, computes on its caller's);
    lanes of several cores get one each (the callers of a session share its one pool).
    `bf16`: OpenVINO computes in bf16 (the caller checked that this CPU can)."""
    if runtime == "openvino":
        return _openvino_sessions(path, threads, lanes, "bf16" if bf16 else "f32")
    if threads == 1:
        return [_onnx_session(path, 1)] * max(1, lanes)
    return [_onnx_session(path, threads) for _ in range(max(1, lanes))]


def _onnx_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No pool spin-waits: on a machine whose cores are shared with parsing and the API,
    # spinning threads take the cores they wait for.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OpenVinoSession:
    """One OpenVINO infer request (a lane's), answering as an ONNX Runtime session does."""

    def __init__(self, compiled: Any) -> None:
        self._request = compiled.create_infer_request()
        self._output = compiled.output(0)
        self._lock = threading.Lock()  # a request runs one inference at a time

    def run(self, _names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:  # infer releases the GIL while it computes
            result = self._request.infer(feed)
            return [np.array(result[self._output], dtype=np.float32)]  # its buffer is reused


def _openvino_sessions(path: Path, threads: int, lanes: int, precision: str) -> list[Any]:
    """One compiled model with a stream per lane (OpenVINO's own way of running inferences
    side by side on shares of the cores), in `precision`: f32 as exported (never bf16
    unasked on a CPU that has it, which would change the vectors), or bf16."""
    import openvino as ov

    lanes = max(1, lanes)
    config = {
        "INFERENCE_PRECISION_HINT": precision,
        "NUM_STREAMS": str(lanes),
        "INFERENCE_NUM_THREADS": str(max(1, threads) * lanes),
        "PERFORMANCE_HINT": "THROUGHPUT",
    }
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    runs = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    if runs != precision:
        raise EngineUnavailable(f"OpenVINO runs it in {runs}, not the {precision} asked for")
    return [OpenVinoSession(compiled) for _ in range(lanes)]
