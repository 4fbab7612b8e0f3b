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
