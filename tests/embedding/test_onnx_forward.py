"""ONNX Runtime as the CPU engine of a local encoder: the same vectors, one export, and
torch kept wherever it cannot run the model."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedding.model_source import resolve_model
from embedding.st_embedder import SentenceTransformerEmbedder

TEXTS = [
    "Coffee brewing methods compared.",
    "A much longer passage about the chemistry of roasting, " * 12,  # past MiniLM's 256 tokens
    "Ünïcödé façade — 北京大学 대학교 and numbers 12,345.6",
    "x",
]


def _variant(minilm_path: str, folder: Path, pooling: dict[str, bool], **config: object) -> str:
    """A copy of MiniLM with another pooling or sentence-transformers config."""
    shutil.copytree(minilm_path, folder)
    pooling_file = folder / "1_Pooling" / "config.json"
    pooling_file.write_text(json.dumps(json.loads(pooling_file.read_text()) | pooling))
    st_file = folder / "config_sentence_transformers.json"
    st_file.write_text(json.dumps(json.loads(st_file.read_text()) | config))
    return str(folder)


def _on_both(model: str, engines: Path) -> tuple[np.ndarray, np.ndarray]:
    source = resolve_model(model)
    onnx = SentenceTransformerEmbedder(source, engine="onnx", engine_dir=engines)
    return onnx.embed_documents(TEXTS), SentenceTransformerEmbedder(source).embed_documents(TEXTS)


def test_onnx_runtime_gives_the_torch_vectors_and_exports_once(
    tmp_path: Path, minilm_path: str
) -> None:
    source = resolve_model(minilm_path)
    engines = tmp_path / "engines"
    got, expected = _on_both(minilm_path, engines)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    first = SentenceTransformerEmbedder(source, engine="onnx", engine_dir=engines)
    np.testing.assert_allclose(
        first.embed_queries(["roasting chemistry"], None),
        SentenceTransformerEmbedder(source).embed_queries(["roasting chemistry"], None),
        atol=1e-5,
    )
    (export,) = engines.glob("*.onnx")
    assert [p.name for p in engines.iterdir()] == [export.name]  # no second export, no debris
    made = export.stat().st_mtime_ns
    export.write_bytes(export.read_bytes()[:1000])  # damaged: exported again, once
    again = SentenceTransformerEmbedder(source, engine="onnx", engine_dir=engines)
    np.testing.assert_allclose(again.embed_documents(TEXTS), expected, atol=1e-5)
    assert [p.name for p in engines.iterdir()] == [export.name]
    assert export.stat().st_mtime_ns != made and export.stat().st_size > 1000


def test_cls_pooling_takes_the_first_kept_token(tmp_path: Path, minilm_path: str) -> None:
    cls = _variant(
        minilm_path,
        tmp_path / "cls",
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
    )
    got, expected = _on_both(cls, tmp_path / "engines")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert any((tmp_path / "engines").glob("*.onnx"))


def test_an_export_that_gives_other_vectors_is_made_again(tmp_path: Path, minilm_path: str) -> None:
    """A file under the model's name whose graph gives other vectors (here: the graph of a
    copy of MiniLM whose word embeddings are halved) is caught by the check against torch
    at load, and exported again."""
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other"
    shutil.copytree(minilm_path, other)
    weights = load_file(other / "model.safetensors")
    name = next(k for k in weights if "word_embeddings" in k)
    weights[name] = weights[name] * 0.5
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    _on_both(str(other), tmp_path / "other-engines")
    (wrong,) = (tmp_path / "other-engines").glob("*.onnx")
    _on_both(minilm_path, tmp_path / "engines")
    (export,) = (tmp_path / "engines").glob("*.onnx")
    assert export.name != wrong.name  # the name follows the weights
    export.write_bytes(wrong.read_bytes())
    got, expected = _on_both(minilm_path, tmp_path / "engines")
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert export.read_bytes() != wrong.read_bytes()


def test_a_model_onnx_runtime_cannot_run_stays_on_torch(
    tmp_path: Path, minilm_path: str, tiny_qwen: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prompted = _variant(  # a default prompt: the engine would drop it, so torch keeps it
        minilm_path,
        tmp_path / "prompted",
        {},
        prompts={"passage": "passage: "},
        default_prompt_name="passage",
    )
    for model in (str(tiny_qwen), prompted):  # a decoder (last-token pooling); a prompt
        engines = tmp_path / "engines" / Path(model).name
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            got, expected = _on_both(model, engines)
        assert any("runs on torch" in r.getMessage() for r in caplog.records), caplog.text
        np.testing.assert_array_equal(got, expected)
        assert not engines.exists() or not any(engines.iterdir())
