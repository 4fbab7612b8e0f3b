"""Length-sorted batches packed to a token budget (less padding, steady memory)."""

from __future__ import annotations

from collections.abc import Sequence


def pack_batches(
    lengths: Sequence[int], token_budget: int, max_batch: int = 512
) -> list[list[int]]:
    """Group input indices, longest first, so that `len(batch) * longest <= token_budget`.

    Every input lands in exactly one batch; an input longer than the budget gets a batch
    of its own. The caller restores the original order from the indices.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        size = max(lengths[index], 1)
        width = max(longest, size)
        if current and (width * (len(current) + 1) > token_budget or len(current) >= max_batch):
            batches.append(current)
            current, width = [], size
        current.append(index)
        longest = width
    if current:
        batches.append(current)
    return batches
