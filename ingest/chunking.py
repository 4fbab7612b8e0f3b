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
_BATCH = 256  # elements tokenized in one call


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

    def windows(
        self, text: str, offsets: Sequence[tuple[int, int]] | None = None
    ) -> list[tuple[str, int]]:
        """Overlapping windows of at most `max_tokens` tokens and `max_chars` characters,
        each with its token count; `offsets`: the text's token offsets when already known
        (unused for a text over `max_chars`, which is split and tokenized in parts)."""
        if len(text) > self.max_chars:
            parts = split_by_chars(text, self.max_chars)
            return [pair for part in parts for pair in self.windows(part)]
        if offsets is None:
            offsets = self._tokenizer.encode([text])[0].offsets
        if len(offsets) <= self.max_tokens:
            return [(text, len(offsets))]
        windows = self._cut(text, offsets)
        return list(zip(windows, self.count(windows), strict=True))

    def _cut(self, text: str, offsets: Sequence[tuple[int, int]]) -> list[str]:
        """`text`, longer than `max_tokens`, in overlapping windows cut at its tokens."""
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

    def _tail(self, text: str) -> tuple[str, int, int | None]:
        """The last `overlap` tokens of `text`, carried into the next chunk: their text and
        tokens, and the tokens of `text` itself (None when not counted)."""
        if not self.overlap:
            return "", 0, None
        offsets = self._tokenizer.encode([text])[0].offsets
        if len(offsets) <= self.overlap:
            return text, len(offsets), len(offsets)
        tail = text[offsets[-self.overlap][0] :].strip()
        return tail, self.count([tail])[0] if tail else 0, len(offsets)

    def chunk(self, elements: Sequence[Element]) -> list[Chunk]:
        pieces = self._pieces(elements)
        groups: list[list[_Piece]] = []
        counted: dict[int, int] = {}  # a closed group's tokens, joined, when its tail knew them
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
                    tail, tail_tokens, whole = self._tail(
                        _SEPARATOR.join(p.text for p in groups[-1])
                    )
                    if whole is not None:
                        counted[len(groups) - 1] = whole
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
        return self._finish(groups, counted)

    def _pieces(self, elements: Sequence[Element]) -> list[_Piece]:
        """Elements with token counts; over-long ones cut into windows from the tokens that
        counted them (tokenizing is most of a chunker's time: an element is tokenized once,
        and only the windows cut from it are counted again)."""
        bounded = [
            Element(part, e.type, e.page, e.languages, e.ocr, e.ocr_confidence)
            for e in elements
            for part in split_by_chars(e.text, self.max_chars)
        ]
        pieces: list[_Piece] = []
        for at in range(0, len(bounded), _BATCH):  # (a book's tokens at once are a lot)
            batch = bounded[at : at + _BATCH]
            tokens = self._tokenizer.encode([e.text for e in batch])
            for element, found in zip(batch, tokens, strict=True):
                if len(found.ids) <= self.max_tokens:
                    pieces.append(_Piece(element.text, len(found.ids), element))
                    continue
                for window, count in self.windows(element.text, found.offsets):
                    pieces.append(_Piece(window, count, element))
        return pieces

    def _finish(self, groups: list[list[_Piece]], counted: dict[int, int]) -> list[Chunk]:
        chunks: list[Chunk] = []
        for at, group in enumerate(groups):
            joined = _SEPARATOR.join(p.text for p in group)
            known = counted.get(at)
            if len(group) == 1 and group[0].tokens <= self.max_tokens:
                parts = [(group[0].text, group[0].tokens)]  # counted already, and in bounds
            elif known is not None and known <= self.max_tokens and len(joined) <= self.max_chars:
                parts = [(joined, known)]  # counted whole as its tail was taken: in bounds
            else:  # a safety net: never exceed the model's limit
                parts = self.windows(joined)
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
