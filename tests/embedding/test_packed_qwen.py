"""Padding-free (packed) Qwen3 forwards: the same vectors as the padded reference."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from embedding.model_source import resolve_model
from embedding.packed_qwen import (
    PackedQwen3,
    pack_features,
    positions_of,
    split_on_oom,
)
from embedding.st_embedder import SentenceTransformerEmbedder

WORDS = [
    "owl",
    "river",
    "tide",
    "lamp",
    "glacier",
    "violin",
    "harbour",
    "copper",
    "meadow",
    "lantern",
]


def texts(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 120))) for _ in range(count)]


def test_packing_drops_padding_on_either_side_and_keeps_row_order() -> None:
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 1], [0, 0, 0, 4]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    packed = pack_features(ids, left)
    assert packed.input_ids.tolist() == [5, 6, 7, 8, 9, 1, 4]
    assert packed.cu_seqlens.tolist() == [0, 2, 6, 7] and packed.max_len == 4
    right = pack_features(
        torch.tensor([[3, 4, 0], [5, 0, 0]]), torch.tensor([[1, 1, 0], [1, 0, 0]])
    )
    assert right.input_ids.tolist() == [3, 4, 5] and right.lengths.tolist() == [2, 1]
    assert positions_of(packed.cu_seqlens, 7).tolist() == [0, 1, 0, 1, 2, 3, 0]


def test_packed_forward_matches_the_padded_model_to_1e5(tiny_qwen: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(tiny_qwen), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_qwen), padding_side="left")
    batch = tokenizer(texts(9), padding=True, return_tensors="pt")
    with torch.inference_mode():
        reference = model(**batch).last_hidden_state[:, -1]  # left padding: last = real
    packed = PackedQwen3(model).last_hidden(
        pack_features(batch["input_ids"], batch["attention_mask"])
    )
    assert PackedQwen3(model).backend == "sdpa per sequence"
    assert torch.allclose(packed, reference, atol=1e-5, rtol=1e-4)


def test_the_embedder_gives_the_same_vectors_packed_or_padded(tiny_qwen: Path) -> None:
    source = resolve_model(str(tiny_qwen))
    inputs = texts(40, seed=7)
    for dimension in (None, 32):
        plain = SentenceTransformerEmbedder(source, device="cpu", packed=False, dimension=dimension)
        packed = SentenceTransformerEmbedder(source, device="cpu", packed=True, dimension=dimension)
        expected = plain.embed_documents(inputs)
        found = packed.embed_documents(inputs)
        assert packed._packed is not None and plain._packed is None
        assert found.shape == expected.shape
        assert np.allclose(found, expected, atol=1e-5)  # same order, same vectors
        assert np.allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-5)
        queries = ["where do owls hunt", "copper violin"]
        assert np.allclose(
            packed.embed_queries(queries, None), plain.embed_queries(queries, None), atol=1e-5
        )


def test_an_out_of_memory_batch_is_split_not_failed() -> None:
    calls: list[int] = []

    def fake_gpu_with_room_for_two(rows: list[int]) -> torch.Tensor:
        calls.append(len(rows))
        if len(rows) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return torch.tensor([[float(r)] for r in rows])

    parts = split_on_oom(fake_gpu_with_room_for_two, [10, 11, 12, 13, 14])
    assert [list(rows) for rows, _ in parts] == [[10, 11], [12], [13, 14]]
    assert torch.cat([v for _, v in parts]).flatten().tolist() == [10, 11, 12, 13, 14]
    assert calls[0] == 5
    with pytest.raises(torch.OutOfMemoryError):
        split_on_oom(lambda rows: (_ for _ in ()).throw(torch.OutOfMemoryError("x")), [1])


@pytest.mark.gpu
def test_packed_bf16_on_cuda_agrees_with_the_plain_path(tiny_qwen: Path) -> None:
    source = resolve_model(str(tiny_qwen))
    inputs = [*texts(64, seed=3), "a" * 3000]
    plain = SentenceTransformerEmbedder(source, device="cuda", packed=False)
    packed = SentenceTransformerEmbedder(source, device="cuda")  # packed by default on CUDA
    expected, found = plain.embed_documents(inputs), packed.embed_documents(inputs)
    assert packed._packed is not None
    cosines = (expected * found).sum(axis=1)
    assert cosines.min() >= 0.999, cosines.min()


def test_a_varlen_kernel_is_used_only_when_it_matches_the_reference() -> None:
    from embedding.packed_qwen import _agrees, _sdpa_per_sequence

    def not_causal(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: object
    ) -> torch.Tensor:
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        )
        return out.transpose(0, 1)

    def broken(*args: object) -> torch.Tensor:
        raise RuntimeError("no kernel image is available for execution on the device")

    assert _agrees(_sdpa_per_sequence, 4, 2, 16, "cpu")
    assert not _agrees(not_causal, 4, 2, 16, "cpu")  # attends across sequences: refused
    assert not _agrees(broken, 4, 2, 16, "cpu")
