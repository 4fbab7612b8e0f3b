"""Which embedding model to run when none is configured: the best one this machine can load."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from embedding.errors import ModelLoadError
from embedding.model_source import ModelSource, resolve_model

log = logging.getLogger(__name__)

GPU_MODEL = "Qwen/Qwen3-Embedding-4B"
CPU_MODEL = "Qwen/Qwen3-Embedding-0.6B"
PACKAGED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HOW_TO_CHOOSE = (
    "Set QUARRY_EMBEDDING_MODEL to a hub id or a local model folder "
    "(e.g. /models/Qwen3-Embedding-4B) to choose another"
)


@dataclass(frozen=True)
class ModelChoice:
    """The model in use, why it was chosen, and a warning when it is a fallback."""

    source: ModelSource
    reason: str
    warning: str | None = None

    def describe(self) -> dict[str, str]:
        """As /readyz and `quarry stats` show it."""
        info = {"model": self.source.model_id, "chosen": self.reason}
        return info | ({"warning": self.warning} if self.warning else {})


def _cuda_present() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def choose_model(
    configured: str | None,
    revision: str | None = None,
    served_name: str | None = None,
    *,
    weights: bool = True,
    cuda: bool | None = None,
) -> ModelChoice:
    """The model to run, in the documented order.

    `QUARRY_EMBEDDING_MODEL` when set (and then only it: a configured model that cannot be
    loaded is an error, never silently replaced); else Qwen3-Embedding-4B with a CUDA GPU
    (or when the model runs on remote servers); else Qwen3-Embedding-0.6B; and when those
    cannot be loaded (no hub access, not cached), the all-MiniLM-L6-v2 the install ships.

    Raises:
        ModelLoadError: the configured model, or every candidate, cannot be found.
    """
    if configured:
        source = resolve_model(configured, revision, served_name, weights=weights)
        return ModelChoice(source, "set by QUARRY_EMBEDDING_MODEL")
    if not weights:  # remote servers run it: they are GPU machines by design
        source = resolve_model(GPU_MODEL, revision, served_name, weights=False)
        return ModelChoice(source, "the default for embedding servers")
    gpu = _cuda_present() if cuda is None else cuda
    preferred = GPU_MODEL if gpu else CPU_MODEL
    why = "the default with a CUDA GPU" if gpu else "the default on a machine without a GPU"
    candidates = [GPU_MODEL, CPU_MODEL] if gpu else [CPU_MODEL]
    for name in candidates:
        try:
            source = resolve_model(name, revision, served_name)
        except ModelLoadError as exc:
            log.info("default model %s unavailable: %s", name, exc.message)
            continue
        if name == preferred:
            return ModelChoice(source, why)
        warning = f"{preferred} could not be loaded; using {name}. {HOW_TO_CHOOSE}"
        log.warning(warning)
        return ModelChoice(source, why, warning)
    source = resolve_model(PACKAGED_MODEL, None, served_name)
    warning = (
        f"Using the small packaged model {PACKAGED_MODEL}: "
        f"{' and '.join(candidates)} cannot be loaded here (not in the Hugging Face cache and "
        f"the hub is unreachable); search quality is well below theirs. {HOW_TO_CHOOSE}"
    )
    log.warning(warning)
    return ModelChoice(source, "the packaged fallback", warning)
