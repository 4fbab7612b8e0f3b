"""The Qwen3 path equals the official recipe: AutoModel + EOS + left pad + last token + L2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from embedding.instructions import format_query
from embedding.model_source import resolve_model
from embedding.random_qwen import build_random_qwen3, qwen_tokenizer_dir
from embedding.st_embedder import SentenceTransformerEmbedder

TASK = "Given a web search query, retrieve relevant passages that answer the query"
DOCS = [
    "Qdrant is a vector database written in Rust.",
    "x",
    "A considerably longer passage about retrieval augmented generation, embeddings, "
    "instruction-tuned query encoders and the way last-token pooling reads the EOS state. " * 3,
]


def reference(model_dir: Path, texts: list[str], max_length: int = 8192) -> np.ndarray:
    """Qwen3-Embedding's published transformers recipe, written out by hand."""
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()), padding_side="left")
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids = [
        [*tokenizer(t, add_special_tokens=False)["input_ids"][: max_length - 1], eos] for t in texts
    ]
    batch = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    assert bool((batch["attention_mask"][:, -1] == 1).all()), "left padding puts every EOS last"
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    return F.normalize(hidden[:, -1], p=2, dim=1).numpy()


def test_query_format_has_no_space_after_query() -> None:
    assert format_query(TASK, "what is qdrant") == f"Instruct: {TASK}\nQuery:what is qdrant"
    assert format_query(None, "plain") == "plain"


def test_documents_match_reference(tiny_qwen: Path) -> None:
    embedder = SentenceTransformerEmbedder(resolve_model(str(tiny_qwen)))
    got = embedder.embed_documents(DOCS)
    np.testing.assert_allclose(got, reference(tiny_qwen, DOCS), atol=1e-5)


def test_queries_carry_the_instruction(tiny_qwen: Path) -> None:
    embedder = SentenceTransformerEmbedder(resolve_model(str(tiny_qwen)))
    got = embedder.embed_queries(["what is qdrant"], TASK)
    want = reference(tiny_qwen, [format_query(TASK, "what is qdrant")])
    np.testing.assert_allclose(got, want, atol=1e-5)
    plain = reference(tiny_qwen, ["what is qdrant"])
    assert not np.allclose(got, plain, atol=1e-3), "the instruction must change the vector"


def test_bare_folder_and_plain_tokenizer_get_eos_appended(tmp_path: Path) -> None:
    bare = build_random_qwen3(
        tmp_path / "bare", sentence_transformers_layout=False, append_eos_in_tokenizer=False
    )
    embedder = SentenceTransformerEmbedder(resolve_model(str(bare)))
    np.testing.assert_allclose(embedder.embed_documents(DOCS), reference(bare, DOCS), atol=1e-5)
    assert embedder.special_tokens() == 1


@pytest.mark.parametrize("dim", [32, 48])
def test_matryoshka_truncates_then_normalises(tiny_qwen: Path, dim: int) -> None:
    embedder = SentenceTransformerEmbedder(resolve_model(str(tiny_qwen)), dimension=dim)
    got = embedder.embed_documents(DOCS)
    full = reference(tiny_qwen, DOCS)[:, :dim]
    np.testing.assert_allclose(got, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5)
    assert got.shape == (len(DOCS), dim)


def test_token_budget_does_not_change_vectors(tiny_qwen: Path) -> None:
    texts = [f"document number {i} " * (1 + i % 7) for i in range(40)]
    small = SentenceTransformerEmbedder(resolve_model(str(tiny_qwen)), batch_tokens=64)
    large = SentenceTransformerEmbedder(resolve_model(str(tiny_qwen)), batch_tokens=100_000)
    np.testing.assert_allclose(
        small.embed_documents(texts), large.embed_documents(texts), atol=1e-5
    )


def test_max_length_truncates_like_the_reference(tiny_qwen: Path) -> None:
    embedder = SentenceTransformerEmbedder(resolve_model(str(tiny_qwen)), max_length=16)
    got = embedder.embed_documents([DOCS[2]])
    np.testing.assert_allclose(got, reference(tiny_qwen, [DOCS[2]], max_length=16), atol=1e-5)


def test_minilm_takes_no_instruction(minilm_path: str) -> None:
    embedder = SentenceTransformerEmbedder(resolve_model(minilm_path))
    with_instruction = embedder.embed_queries(["tea"], TASK)
    without = embedder.embed_queries(["tea"], None)
    np.testing.assert_allclose(with_instruction, without, atol=1e-6)
    assert embedder.dimension == 384
    assert not embedder.recipe.takes_instruction
