"""Length-sorted batches packed to a token budget (less padding, steady memory)."""

from __future__ import annotations

from collections.abc import Sequence


def pack_batches(
    lengths: Sequence[int], token_budget: int, max_batch: int = 512, *, padded: bool = True
) -> list[list[int]]:
    """Group input indices, longest first, so that a batch's cost stays within
    `token_budget`: `len(batch) * longest` when it is padded, the sum of its lengths when
    it is packed without padding.

    Every input lands in exactly one batch; an input longer than the budget gets a batch
    of its own. The caller restores the original order from the indices.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    longest = total = 0
    for index in order:
        size = max(lengths[index], 1)
        width = max(longest, size)
        cost = width * (len(current) + 1) if padded else total + size
        if current and (cost > token_budget or len(current) >= max_batch):
            batches.append(current)
            current, width, total = [], size, 0
        current.append(index)
        longest = width
        total += size
    if current:
        batches.append(current)
    return batches
