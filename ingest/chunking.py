"""Structure-aware chunking bounded in model tokens, with overlap.

Sections start at titles; elements of a section fill a chunk up to `max_tokens`; a table
that fits stays whole; an element too long for one chunk is cut into overlapping token
windows. A small section merges into the next rather than making a tiny chunk.

Chunks are bounded in characters too: a run the tokenizer sees as few tokens (a word-piece
tokenizer turns any 100+ character "word" into one unknown token) is still cut, so no chunk
can carry megabytes of text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from embedding.tokenizers import SharedTokenizer
from ingest.models import Chunk, Element

_SEPARATOR = "\n\n"
_TITLE_TYPES = {"Title"}
_TABLE_TYPES = {"Table"}


class ChunkStrategy(Protocol):
    def chunk(self, elements: Sequence[Element]) -> list[Chunk]: ...


def lowest_confidence(elements: Sequence[Element]) -> float | None:
    """The least sure OCR among `elements` (None: none was read by OCR)."""
    found = [e.ocr_confidence for e in elements if e.ocr_confidence is not None]
    return min(found) if found else None


class WholeDocument:
    """One chunk per document; the model truncates it at its max length, as MTEB does."""

    def chunk(self, elements: Sequence[Element]) -> list[Chunk]:
        text = _SEPARATOR.join(e.text for e in elements)
        types = tuple(dict.fromkeys(e.type for e in elements))
        ocr = any(e.ocr for e in elements)
        chunk = Chunk(
            index=0,
            text=text,
            tokens=0,
            page=None,
            element_types=types,
            ocr=ocr,
            ocr_confidence=lowest_confidence(elements),
        )
        return [chunk] if text else []


@dataclass
class _Piece:
    text: str
    tokens: int
    element: Element


# Characters allowed per token of chunk size: generous for any script, yet a bound.
CHARS_PER_TOKEN = 12


def split_by_chars(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at whitespace where there is some.

    Linear in the text's length: a 50 MB run is cut without copying its remainder over.
    """
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    start, end = 0, len(text)
    while start < end:
        while start < end and text[start].isspace():
            start += 1
        if end - start <= limit:
            if start < end:
                pieces.append(text[start:end])
            break
        cut = text.rfind(" ", start + limit // 2, start + limit)
        stop = cut if cut > start else start + limit
        pieces.append(text[start:stop])
        start = stop
    return pieces


class Chunker:
    """Cuts a document's elements into chunks of at most `max_tokens` model tokens.

    Safe to share between threads: they tokenize side by side on one shared tokenizer.
    """

    def __init__(self, tokenizer: SharedTokenizer, max_tokens: int, overlap: int) -> None:
        if max_tokens < 8:
            raise ValueError(f"chunk size of {max_tokens} tokens is too small")
        self._tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.max_chars = max_tokens * CHARS_PER_TOKEN
        self.overlap = min(overlap, max_tokens // 2)
        self._min_section = max_tokens // 4

    def count(self, texts: Sequence[str]) -> list[int]:
        return self._tokenizer.counts(texts)

    def windows(self, text: str) -> list[str]:
        """Overlapping windows of at most `max_tokens` tokens and `max_chars` characters."""
        if len(text) > self.max_chars:
            return [w for part in split_by_chars(text, self.max_chars) for w in self.windows(part)]
        offsets = self._tokenizer.encode([text])[0].offsets
        if len(offsets) <= self.max_tokens:
            return [text]
        step = self.max_tokens - self.overlap
        out = []
        for start in range(0, len(offsets), step):
            end = min(start + self.max_tokens, len(offsets))
            piece = text[offsets[start][0] : offsets[end - 1][1]].strip()
            if piece:
                out.append(piece)
            if end == len(offsets):
                break
        return out

    def _tail(self, text: str) -> str:
        """The last `overlap` tokens of `text`, carried into the next chunk."""
        if not self.overlap:
            return ""
        offsets = self._tokenizer.encode([text])[0].offsets
        if len(offsets) <= self.overlap:
            return text
        return text[offsets[-self.overlap][0] :].strip()

    def chunk(self, elements: Sequence[Element]) -> list[Chunk]:
        pieces = self._pieces(elements)
        groups: list[list[_Piece]] = []
        current: list[_Piece] = []
        used = chars = 0
        for piece in pieces:
            starts_section = piece.element.type in _TITLE_TYPES and used >= self._min_section
            too_big = current and (
                used + piece.tokens + 1 > self.max_tokens
                or chars + len(piece.text) + len(_SEPARATOR) > self.max_chars
            )
            if starts_section or too_big:
                if current:
                    groups.append(current)
                current, used, chars = [], 0, 0
                if too_big and not starts_section:
                    tail = self._tail(_SEPARATOR.join(p.text for p in groups[-1]))
                    tail_tokens = self.count([tail])[0] if tail else 0
                    fits = chars + len(tail) + len(piece.text) + 4 <= self.max_chars
                    if tail and fits and tail_tokens + piece.tokens + 1 <= self.max_tokens:
                        current, used, chars = (
                            [_Piece(tail, tail_tokens, groups[-1][-1].element)],
                            tail_tokens + 1,
                            len(tail) + len(_SEPARATOR),
                        )
            current.append(piece)
            used += piece.tokens + 1
            chars += len(piece.text) + len(_SEPARATOR)
        if current:
            groups.append(current)
        return self._finish(groups)

    def _pieces(self, elements: Sequence[Element]) -> list[_Piece]:
        """Elements with token counts; over-long ones split into windows."""
        bounded = [
            Element(part, e.type, e.page, e.languages, e.ocr, e.ocr_confidence)
            for e in elements
            for part in split_by_chars(e.text, self.max_chars)
        ]
        counts = self.count([e.text for e in bounded])
        pieces: list[_Piece] = []
        for element, tokens in zip(bounded, counts, strict=True):
            if tokens <= self.max_tokens:
                pieces.append(_Piece(element.text, tokens, element))
                continue
            for window in self.windows(element.text):
                pieces.append(_Piece(window, self.count([window])[0], element))
        return pieces

    def _finish(self, groups: list[list[_Piece]]) -> list[Chunk]:
        chunks: list[Chunk] = []
        for group in groups:
            if len(group) == 1 and group[0].tokens <= self.max_tokens:
                parts = [(group[0].text, group[0].tokens)]  # counted already, and in bounds
            else:  # a safety net: never exceed the model's limit
                windows = self.windows(_SEPARATOR.join(p.text for p in group))
                parts = list(zip(windows, self.count(windows), strict=True))
            for part, tokens in parts:
                pages = [p.element.page for p in group if p.element.page is not None]
                types = tuple(dict.fromkeys(p.element.type for p in group))
                languages = tuple(
                    dict.fromkeys(lang for p in group for lang in p.element.languages)
                )
                chunks.append(
                    Chunk(
                        index=len(chunks),
                        text=part,
                        tokens=tokens,
                        page=min(pages) if pages else None,
                        element_types=types,
                        languages=languages,
                        ocr=any(p.element.ocr for p in group),
                        ocr_confidence=lowest_confidence([p.element for p in group]),
                    )
                )
        return chunks
