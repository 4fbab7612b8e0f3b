"""Store files copied with their holes: the same bytes, not the preallocated zeros on disk."""

from __future__ import annotations

from pathlib import Path

from retrieval.file_copy import BLOCK, copy_with_holes


def test_a_copy_reads_the_same_and_keeps_zeros_as_holes(tmp_path: Path) -> None:
    source = tmp_path / "page.dat"
    data = b"head" + bytes(3 * BLOCK) + b"middle" * 1000 + bytes(2 * BLOCK + 17)
    source.write_bytes(data)
    copied = tmp_path / "copy.dat"
    copy_with_holes(source, copied)
    assert copied.read_bytes() == data
    written = copied.stat().st_blocks * 512
    assert written <= 2 * BLOCK < source.stat().st_blocks * 512  # 2 blocks hold data, not 5
    assert copied.stat().st_mtime == source.stat().st_mtime
