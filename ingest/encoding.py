"""Decode text files whatever their encoding (BOMs, UTF-16, cp1252, latin-1)."""

from __future__ import annotations

import codecs

from charset_normalizer import from_bytes

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def detect_encoding(data: bytes) -> str:
    """The encoding to read `data` with: BOM first, then strict UTF-8, then a statistical guess."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    utf16 = _bomless_utf16(data[:4096])
    if utf16:
        return utf16
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    matches = from_bytes(data[:200_000])
    # Close single-byte code pages often all decode Western text; cp1252 is by far the
    # likeliest of them, so it wins whenever it is a plausible reading at all.
    if any(match.encoding == "cp1252" for match in matches):
        return "cp1252"
    best = matches.best()
    if best is not None and best.encoding:
        return str(best.encoding)
    try:
        data.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def _bomless_utf16(sample: bytes) -> str | None:
    """ASCII-range text in UTF-16 without a BOM is valid UTF-8 too; its NULs give it away."""
    if len(sample) < 4 or sample.count(0) < len(sample) // 4:
        return None
    even = sample[0::2].count(0)
    odd = sample[1::2].count(0)
    if even > 3 * max(odd, 1):
        return "utf-16-be"
    if odd > 3 * max(even, 1):
        return "utf-16-le"
    return None


def decode(data: bytes) -> str:
    return data.decode(detect_encoding(data), errors="replace")
