"""A model is known by its public name and its files' contents, never by where it lies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.resources import Resources
from app.settings import Settings
from embedding.model_source import public_name, resolve_model
from ingest.sources import FileSource
from retrieval.errors import RecipeMismatchError


def test_public_names_for_local_copies(minilm_path: str, tmp_path: Path) -> None:
    assert resolve_model(minilm_path).model_id == "sentence-transformers/all-MiniLM-L6-v2"
    cached = tmp_path / "hub" / "models--Qwen--Qwen3-Embedding-4B" / "snapshots" / "abc"
    assert public_name(str(cached), cached) == "Qwen/Qwen3-Embedding-4B"
    assert public_name("x", tmp_path / "Qwen3-Embedding-0.6B") == "Qwen/Qwen3-Embedding-0.6B"
    assert public_name("x", tmp_path / "my-model") == "my-model"
    assert resolve_model(minilm_path, served_name="acme/embedder").model_id == "acme/embedder"
    assert resolve_model(minilm_path).short_name == "all-MiniLM-L6-v2"


def test_a_collection_opens_with_another_copy_of_the_same_model(
    settings: Settings, minilm_path: str, tmp_path: Path
) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("Barn owls nest in old farm buildings.")
    first = Resources(settings)
    first.pipeline("test").run([FileSource(doc, "doc.txt")])
    recipe = first.store.recipe("test")
    first.close()
    assert recipe is not None and recipe.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert recipe.revision and recipe.max_length > 0 and "/" not in recipe.revision

    copy = tmp_path / "elsewhere" / "all-MiniLM-L6-v2"
    shutil.copytree(minilm_path, copy)
    moved = Resources(
        settings.model_copy(
            update={"embedding_model": str(copy), "query_instruction": "Find passages"}
        )
    )
    hits = moved.search_service("test").search("test", "where do owls live", top_k=1).hits
    assert hits[0].source == "doc.txt"  # another path, another default instruction: fine
    moved.close()

    other = Resources(settings.model_copy(update={"embedding_dim": 128}))
    with pytest.raises(RecipeMismatchError):
        other.check_recipe_early("test")
    other.close()


def test_a_dimension_wider_than_the_model_stops_the_server(
    minilm_path: str, tmp_path: Path
) -> None:
    from ..servers import quarry, quarry_env

    env = quarry_env(tmp_path / "data", minilm_path, "redis://127.0.0.1:1/0")
    env["QUARRY_EMBEDDING_DIM"] = "4096"
    result = quarry(env, "serve", "--port", "1", timeout=120)
    assert result.returncode == 1
    assert "QUARRY_EMBEDDING_DIM=4096" in result.stderr and "384" in result.stderr
