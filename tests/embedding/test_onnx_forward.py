"""ONNX Runtime as the CPU engine of a local encoder: the same vectors, one export, and
torch kept wherever it cannot run the model."""

from __future__ import annotations

import logging
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


def test_onnx_runtime_gives_the_torch_vectors_and_exports_once(
    tmp_path: Path, minilm_path: str
) -> None:
    source = resolve_model(minilm_path)
    torch_vectors = SentenceTransformerEmbedder(source).embed_documents(TEXTS)
    engines = tmp_path / "engines"
    first = SentenceTransformerEmbedder(source, engine="onnx", engine_dir=engines)
    np.testing.assert_allclose(first.embed_documents(TEXTS), torch_vectors, atol=1e-5)
    queries = first.embed_queries(["roasting chemistry"], None)
    np.testing.assert_allclose(
        queries,
        SentenceTransformerEmbedder(source).embed_queries(["roasting chemistry"], None),
        atol=1e-5,
    )
    (export,) = engines.glob("*.onnx")
    made = export.stat().st_mtime_ns
    again = SentenceTransformerEmbedder(source, engine="onnx", engine_dir=engines)
    np.testing.assert_allclose(again.embed_documents(TEXTS[:1]), torch_vectors[:1], atol=1e-5)
    assert [p.name for p in engines.iterdir()] == [export.name]  # no second export, no debris
    assert export.stat().st_mtime_ns == made


def test_a_model_onnx_runtime_cannot_run_stays_on_torch(
    tmp_path: Path, tiny_qwen: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = resolve_model(str(tiny_qwen))  # a decoder (last-token pooling)
    engines = tmp_path / "engines"
    with caplog.at_level(logging.WARNING):
        asked = SentenceTransformerEmbedder(source, engine="onnx", engine_dir=engines)
        vectors = asked.embed_documents(TEXTS)
    assert any("runs on torch" in r.getMessage() for r in caplog.records), caplog.text
    np.testing.assert_array_equal(
        vectors, SentenceTransformerEmbedder(source).embed_documents(TEXTS)
    )
    assert not engines.exists() or not any(engines.iterdir())
