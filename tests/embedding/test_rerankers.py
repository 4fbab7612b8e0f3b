"""Rerankers: Qwen3-Reranker's scoring proven against its model card's own code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedding.errors import ModelLoadError
from embedding.random_qwen import build_random_qwen3_reranker
from embedding.rerankers import CrossEncoderReranker, Qwen3Reranker, load_reranker

QUERY = "What do owls eat?"
PASSAGES = [
    "Owls hunt mice, voles and insects at night.",
    "Espresso is brewed by forcing hot water through finely ground coffee.",
    "x",
    "A barn owl can swallow a mouse whole; " * 30,
    "猫头鹰在夜间捕食老鼠。",
]


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_qwen3_reranker(tmp_path_factory.mktemp("rr") / "tiny-qwen3-reranker")


def model_card_scores(path: Path, query: str, docs: list[str], instruction: str) -> list[float]:
    """Qwen/Qwen3-Reranker's scoring as its model card writes it: one padded batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    loader: Any = AutoModelForCausalLM
    model = loader.from_pretrained(str(path)).eval()
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    max_length = 8192
    prefix = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the "
        'Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n"
    )
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    prefix_tokens = tokenizer.encode(prefix, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(suffix, add_special_tokens=False)
    pairs = [f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}" for doc in docs]
    inputs = tokenizer(
        pairs,
        padding=False,
        truncation="longest_first",
        return_attention_mask=False,
        max_length=max_length - len(prefix_tokens) - len(suffix_tokens),
    )
    for i, ele in enumerate(inputs["input_ids"]):
        inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
    inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)
    with torch.no_grad():
        batch_scores = model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, token_true_id]
        false_vector = batch_scores[:, token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return [float(s) for s in batch_scores[:, 1].exp().tolist()]


def test_qwen3_reranker_equals_the_model_card_scoring(tiny_reranker: Path) -> None:
    instruction = "Given a question, retrieve passages that answer it"
    expected = model_card_scores(tiny_reranker, QUERY, PASSAGES, instruction)
    # Small batches, sorted by length: other padding than the reference's one batch.
    reranker = Qwen3Reranker(tiny_reranker, device="cpu", batch_tokens=160)
    got = reranker.rerank(QUERY, PASSAGES, instruction)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(0.0 < s < 1.0 for s in got)
    default = reranker.rerank(QUERY, PASSAGES)  # the model card's default instruction
    web = "Given a web search query, retrieve relevant passages that answer the query"
    np.testing.assert_allclose(
        default, model_card_scores(tiny_reranker, QUERY, PASSAGES, web), atol=1e-5
    )
    assert reranker.rerank(QUERY, []) == []


def test_a_qwen3_folder_loads_as_the_yes_no_reranker(tiny_reranker: Path) -> None:
    assert isinstance(load_reranker(str(tiny_reranker), device="cpu"), Qwen3Reranker)


def test_a_cross_encoder_scores_pairs_in_order(tmp_path: Path, minilm_path: str) -> None:
    """A real CrossEncoder layout (random head on MiniLM's encoder), built here."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "ce"
    loader: Any = AutoModelForSequenceClassification
    loader.from_pretrained(minilm_path, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    reranker = load_reranker(str(folder), device="cpu")
    assert isinstance(reranker, CrossEncoderReranker)
    scores = reranker.rerank(QUERY, PASSAGES)
    alone = [reranker.rerank(QUERY, [p])[0] for p in PASSAGES]
    np.testing.assert_allclose(scores, alone, atol=1e-5)  # batch order restored


def test_a_reranker_that_cannot_be_found_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="QUARRY_RERANK_MODEL"):
        load_reranker("Qwen/Qwen3-Reranker-0.6B-not-here")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen3"}')
    with pytest.raises(ModelLoadError, match="cannot load the reranker"):
        load_reranker(str(broken)).rerank(QUERY, PASSAGES[:1])
