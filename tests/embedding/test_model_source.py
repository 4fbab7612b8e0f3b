from __future__ import annotations

import pytest

from embedding.errors import ModelLoadError
from embedding.model_source import resolve_model


def test_unknown_model_says_how_to_point_at_a_local_one() -> None:
    with pytest.raises(ModelLoadError) as info:
        resolve_model("Qwen/Qwen3-Embedding-4B-not-cached-here")
    assert "QUARRY_EMBEDDING_MODEL" in info.value.message
    assert "Qwen/Qwen3-Embedding-4B-not-cached-here" in info.value.message


def test_packaged_minilm_resolves_offline() -> None:
    source = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert (source.path / "config.json").is_file()
    assert source.max_seq_length == 256
    assert not source.uses_last_token
