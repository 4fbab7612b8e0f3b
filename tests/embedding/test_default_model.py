"""With no model configured, the best model this machine can load runs, and says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedding.default_model import CPU_MODEL, GPU_MODEL, PACKAGED_MODEL, choose_model
from embedding.errors import ModelLoadError


@pytest.fixture()
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, with no way to reach the hub."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def cache_model(cache: Path, hub_id: str, folder: Path) -> None:
    """Lay `folder` out in the cache as the hub would have downloaded `hub_id`."""
    root = cache / f"models--{hub_id.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / "0123abcd")
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0123abcd")


def test_no_gpu_and_nothing_cached_runs_the_packaged_model(hub_cache: Path) -> None:
    choice = choose_model("", cuda=False)
    assert choice.source.model_id == PACKAGED_MODEL
    assert choice.warning is not None
    assert CPU_MODEL in choice.warning and "QUARRY_EMBEDDING_MODEL" in choice.warning


def test_no_gpu_prefers_the_small_qwen_when_it_is_cached(hub_cache: Path, tiny_qwen: Path) -> None:
    cache_model(hub_cache, CPU_MODEL, tiny_qwen)
    choice = choose_model("", cuda=False)
    assert choice.source.model_id == CPU_MODEL and choice.warning is None
    assert choice.source.uses_last_token


def test_a_gpu_falls_back_from_4b_to_the_small_qwen(hub_cache: Path, tiny_qwen: Path) -> None:
    cache_model(hub_cache, CPU_MODEL, tiny_qwen)
    choice = choose_model("", cuda=True)
    assert choice.source.model_id == CPU_MODEL
    assert choice.warning is not None and GPU_MODEL in choice.warning
    cache_model(hub_cache, GPU_MODEL, tiny_qwen)
    assert choose_model("", cuda=True).source.model_id == GPU_MODEL


def test_a_configured_model_is_never_replaced(hub_cache: Path) -> None:
    with pytest.raises(ModelLoadError, match="Qwen/Qwen3-Embedding-8B"):
        choose_model("Qwen/Qwen3-Embedding-8B", cuda=False)


def test_stats_names_the_model_in_use_and_the_warning(
    hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QUARRY_EMBEDDING_MODEL", raising=False)
    monkeypatch.setenv("QUARRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QUARRY_DEVICE", "cpu")
    result = CliRunner().invoke(app, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    import json

    model = json.loads(result.stdout)["model"]
    assert model["model"] == PACKAGED_MODEL
    assert CPU_MODEL in model["warning"]
