"""int8, bf16 and OpenVINO on a CPU: other vectors are recorded as other, the same vectors as
the same, `auto` picks by what the CPU has, and a runtime or precision that cannot run
leaves torch's vectors (and says so)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from app.resources import Resources
from app.settings import Settings
from embedding.cpu_runtimes import choose_engine, native_bf16
from embedding.model_source import resolve_model
from embedding.st_embedder import SentenceTransformerEmbedder
from ingest.sources import FileSource, expand_paths
from retrieval.errors import RecipeMismatchError
from retrieval.models import CollectionRecipe, same_vectors

from .test_onnx_forward import TEXTS


def _sources(folder: Path, *names: str) -> list[FileSource]:
    files, _ = expand_paths([str(folder / name) for name in names])
    return [FileSource(path, display=key) for path, key in files]


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_int8_gives_near_vectors_recorded_as_other_and_quantizes_once(
    tmp_path: Path, minilm_path: str
) -> None:
    source = resolve_model(minilm_path)
    torch_side = SentenceTransformerEmbedder(source)
    engines = tmp_path / "engines"
    int8 = SentenceTransformerEmbedder(source, engine="onnx", engine_dir=engines, quantize="int8")
    got, expected = int8.embed_documents(TEXTS), torch_side.embed_documents(TEXTS)
    cosines = (_unit(got) * _unit(expected)).sum(axis=1)
    assert cosines.min() > 0.97 and np.abs(got - expected).max() > 1e-4  # near, not equal
    assert int8.recipe.engine == "onnx-int8" and torch_side.recipe.engine == ""
    assert int8.recipe.fingerprint() != torch_side.recipe.fingerprint()  # the cache follows
    names = sorted((p.name for p in engines.iterdir()), key=len)  # the export, its int8 model
    assert len(names) == 2 and names[1] == names[0].replace(".onnx", "-int8.onnx")
    alone = int8.embed_documents(TEXTS[:1])  # int8 quantizes activations per run: each
    np.testing.assert_array_equal(alone[0], got[0])  # text runs alone, whatever its batch
    made = (engines / names[1]).stat().st_mtime_ns
    again = SentenceTransformerEmbedder(source, engine="onnx", engine_dir=engines, quantize="int8")
    np.testing.assert_allclose(again.embed_documents(TEXTS), got, atol=1e-6)
    assert (engines / names[1]).stat().st_mtime_ns == made


def test_openvino_fp32_gives_the_torch_vectors_and_the_same_recipe(
    tmp_path: Path, minilm_path: str
) -> None:
    pytest.importorskip("openvino")
    source = resolve_model(minilm_path)
    torch_side = SentenceTransformerEmbedder(source)
    ov = SentenceTransformerEmbedder(source, engine="openvino", engine_dir=tmp_path, lanes=2)
    np.testing.assert_allclose(
        ov.embed_documents(TEXTS), torch_side.embed_documents(TEXTS), atol=1e-5
    )
    assert ov.recipe == torch_side.recipe
    assert ov.lanes == 2  # its streams run side by side, as ONNX Runtime's lanes do


def test_bf16_on_openvino_gives_nearer_vectors_recorded_as_other(
    tmp_path: Path, minilm_path: str
) -> None:
    if not native_bf16():
        pytest.skip("this CPU has no native bf16 (AMX, AVX512-BF16)")
    source = resolve_model(minilm_path)
    torch_side = SentenceTransformerEmbedder(source)
    bf16 = SentenceTransformerEmbedder(
        source, engine="openvino", engine_dir=tmp_path, quantize="bf16", lanes=2
    )
    got, expected = bf16.embed_documents(TEXTS), torch_side.embed_documents(TEXTS)
    cosines = (_unit(got) * _unit(expected)).sum(axis=1)
    assert cosines.min() > 0.999 and np.abs(got - expected).max() > 1e-5  # near, not equal
    assert bf16.recipe.engine == "openvino-bf16"
    assert bf16.recipe.fingerprint() != torch_side.recipe.fingerprint()  # the cache follows
    for row, text in enumerate(TEXTS):  # each text runs alone, whatever its batch or lane
        np.testing.assert_array_equal(bf16.embed_documents([text])[0], got[row])
    assert [p.suffix for p in tmp_path.iterdir()] == [".onnx"]  # the fp32 export, no other


def test_auto_picks_bf16_where_the_cpu_has_it_else_int8() -> None:
    assert choose_engine("auto", "auto", bf16=True) == ("openvino", "bf16")
    assert choose_engine("auto", "auto", bf16=False) == ("onnx", "int8")
    assert choose_engine("auto", "auto") == choose_engine("auto", "auto", native_bf16())
    assert choose_engine("auto", "none", bf16=True) == ("onnx", "none")  # fp32, torch's
    assert choose_engine("auto", "int8", bf16=True) == ("onnx", "int8")
    assert choose_engine("auto", "bf16", bf16=False) == ("openvino", "bf16")  # asked: tried
    assert choose_engine("onnx", "auto", bf16=True) == ("onnx", "int8")
    assert choose_engine("openvino", "auto", bf16=True) == ("openvino", "bf16")
    assert choose_engine("openvino", "auto", bf16=False) == ("openvino", "none")
    assert choose_engine("torch", "auto", bf16=True) == ("torch", "none")
    assert choose_engine("torch", "int8") == ("torch", "int8")  # the embedder warns


def test_bf16_where_it_cannot_run_keeps_torch_and_says_why(
    tmp_path: Path, minilm_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = resolve_model(minilm_path)
    wanted = SentenceTransformerEmbedder(
        source, engine="onnx", engine_dir=tmp_path, quantize="bf16"
    )
    assert wanted.recipe.engine == ""  # planned as it will run: fp32
    with caplog.at_level(logging.WARNING):
        got = wanted.embed_documents(TEXTS)
    np.testing.assert_allclose(got, SentenceTransformerEmbedder(source).embed_documents(TEXTS))
    assert wanted.recipe.engine == ""
    assert "bf16 runs on OpenVINO only" in caplog.text and "runs on torch" in caplog.text
    assert not list(tmp_path.iterdir())  # nothing exported for an engine that cannot run


def test_a_missing_runtime_keeps_torch_and_its_fp32_recipe(
    tmp_path: Path,
    minilm_path: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` fails
    source = resolve_model(minilm_path)
    wanted = SentenceTransformerEmbedder(
        source, engine="openvino", engine_dir=tmp_path, quantize="int8"
    )
    with caplog.at_level(logging.WARNING):
        got = wanted.embed_documents(TEXTS)
    np.testing.assert_allclose(got, SentenceTransformerEmbedder(source).embed_documents(TEXTS))
    assert wanted.recipe.engine == ""  # torch's vectors: recorded as what they are
    assert "openvino is not installed" in caplog.text and "runs on torch" in caplog.text
    assert not list(tmp_path.iterdir())


def test_vectors_of_another_engine_are_never_mixed() -> None:
    fp32 = CollectionRecipe("m", 384, "", revision="r")
    int8 = CollectionRecipe("m", 384, "", revision="r", engine="onnx-int8")
    assert int8.vectors_key == "m@r/384#onnx-int8"
    assert same_vectors(int8.vectors_key, int8) and same_vectors(fp32.vectors_key, fp32)
    assert not same_vectors(int8.vectors_key, fp32) and not same_vectors(fp32.vectors_key, int8)
    with pytest.raises(RecipeMismatchError) as info:
        fp32.check(int8, "c")  # an empty engine is fp32, not "unknown"
    assert "engine" in info.value.message and "QUARRY_QUANTIZE" in info.value.message
    assert CollectionRecipe.from_dict(int8.to_dict()) == int8


def test_a_collection_keeps_the_engine_it_was_built_with(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process configured int8 writes and searches an fp32 collection with fp32 vectors
    (one built before QUARRY_QUANTIZE, say), and the other way round: never mixed."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Sourdough needs a lively starter and a long, cool proof.")
    (folder / "b.txt").write_text("Glacier ice cores record the air of past millennia.")
    engines = {"onnx-int8": "int8", "": "none"}

    def configured(engine: str) -> Resources:
        return Resources(settings.model_copy(update={"quantize": engines[engine]}))

    for collection, built, other in (("q", "onnx-int8", ""), ("f", "", "onnx-int8")):
        res = configured(built)
        assert res.pipeline(collection).run(_sources(folder, "a.txt")).ingested == 1
        res.close()
        res = configured(other)  # one process at a time holds the embedded store
        try:
            res.check_recipe_early(collection)  # not refused
            assert res.pipeline(collection).run(_sources(folder, "b.txt")).ingested == 1
            stored = res.store.recipe(collection)
            assert stored is not None and stored.engine == built
            kit = res.kits.for_collection(collection)
            assert kit is not None and kit.embedder.recipe.engine == built
            assert res.embedder.recipe.engine == other  # its own collections: as configured
            hits = res.search_service(collection).search(collection, "ice cores", top_k=1).hits
            assert hits[0].source == "b.txt"
        finally:
            res.close()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # int8 cannot run here now
    res = configured("")
    try:
        with pytest.raises(RecipeMismatchError, match="cannot run"):
            res.check_recipe_early("q")  # refused before any work, naming why
        res.check_recipe_early("f")  # fp32 runs on torch all the same
    finally:
        res.close()
