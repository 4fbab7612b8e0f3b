from __future__ import annotations

import random

from embedding.batching import pack_batches


def test_every_index_once_and_within_budget() -> None:
    rng = random.Random(7)
    lengths = [rng.randint(1, 300) for _ in range(500)]
    batches = pack_batches(lengths, token_budget=2048)
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(500))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or longest * len(batch) <= 2048


def test_longest_first_and_oversized_alone() -> None:
    batches = pack_batches([5, 5000, 10, 7], token_budget=100)
    assert batches[0] == [1]
    assert [len(b) for b in batches[1:]] == [3]


def test_packed_batches_are_bounded_by_their_real_tokens() -> None:
    lengths = [300, 20, 20, 20, 20, 20, 280, 10]
    padded = pack_batches(lengths, token_budget=600)
    packed = pack_batches(lengths, token_budget=600, padded=False)
    assert sorted(i for b in packed for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 600 for b in packed)
    assert padded[0] == [0, 6]  # padded, a third input would cost 3 x 300
    assert packed[0] == [0, 6, 1]  # packed, it costs its own 20 tokens
