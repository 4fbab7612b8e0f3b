"""Plain text read as unstructured's `partition_text` reads it, without spaCy on every
long paragraph.

`partition_text` runs spaCy's tagger and sentence recogniser over each paragraph to tell
narrative from titles: two-thirds of a .txt file's parse time. A paragraph of more than
`UNSTRUCTURED_TITLE_MAX_WORD_LENGTH` words (12) can never be a Title, and one holding two
sentences of three or more words is narrative unless it is mostly non-letters: for such a
paragraph the answer needs only a sentence split, done here with a conservative pattern
(ending punctuation, then a capital; no split after an initial or a common abbreviation).
Every other paragraph (all capitals, an ellipsis, a bullet, an address, a numbered item)
goes through unstructured's own `element_from_text`; languages come from its own
`apply_lang_metadata`. Only a file unstructured itself would read as plain text is read here
(`is_plain_text`: its content-sniffing sends a .txt of comma-separated lines to the CSV
reader, JSON to the JSON one). The elements match `partition_text`'s on the shared corpus
(tests/ingest/test_plain_text.py).
"""

from __future__ import annotations

import os
import re
from itertools import pairwise
from pathlib import Path
from typing import Any

from ingest.models import Element
from ingest.unstructured_elements import to_elements

_CLOSING = "\"')]\u201d\u2019"  # quotes and brackets that may follow a stop
_OPENING = "\"'([\u201c\u2018"
_SENTENCE_END = re.compile(
    rf"(?<=[.!?])[{re.escape(_CLOSING)}]*(?=\s+[{re.escape(_OPENING)}]?[A-Z])"
)
_ABBREVIATIONS = frozenset(
    {"al", "approx", "cf", "co", "corp", "dept", "dr", "eg", "etc", "fig", "figs", "ie"}
    | {"inc", "jr", "ltd", "mr", "mrs", "ms", "no", "nos", "pp", "prof", "ref", "refs"}
    | {"sr", "st", "vol", "vs"}
)


def is_plain_text(path: Path, encoding: str) -> bool:
    """Whether unstructured's `partition` would read the file with `partition_text`; False
    where its sniffing fails (`partition` then fails alike, and says why)."""
    from unstructured.file_utils.filetype import detect_filetype
    from unstructured.file_utils.model import FileType

    try:
        return bool(detect_filetype(file_path=str(path), encoding=encoding) == FileType.TXT)
    except Exception:
        return False


def read_plain_text(path: Path, encoding: str) -> list[Element]:
    """The file's paragraphs as typed elements, with the document's detected languages."""
    from unstructured.cleaners.core import auto_paragraph_grouper
    from unstructured.file_utils.encoding import read_txt_file
    from unstructured.partition.common.lang import apply_lang_metadata
    from unstructured.partition.text import _is_empty_bullet, _split_by_paragraph

    _, text = read_txt_file(filename=str(path), encoding=encoding)
    paragraphs = (part.strip() for part in _split_by_paragraph(auto_paragraph_grouper(text)))
    raw = [_element(part) for part in paragraphs if part and not _is_empty_bullet(part)]
    return to_elements(list(apply_lang_metadata(raw, languages=["auto"])))


def large_plain_text(path: Path, encoding: str) -> list[Element]:
    """Paragraphs of a big plain-text file, without unstructured's per-element analysis,
    which costs gigabytes and minutes on a file of tens of megabytes."""
    text = path.read_bytes().decode(encoding, errors="replace")
    return [
        Element(text=paragraph.strip(), type="NarrativeText")
        for paragraph in re.split(r"\n\s*\n", text)
        if paragraph.strip()
    ]


def _element(text: str) -> Any:
    from unstructured.documents.elements import NarrativeText, Text
    from unstructured.partition.text import element_from_text
    from unstructured.partition.text_type import (
        is_bulleted_text,
        is_email_address,
        is_possible_numbered_list,
        is_us_city_state_zip,
        under_non_alpha_ratio,
    )

    if (
        "UNSTRUCTURED_LANGUAGE_CHECKS" in os.environ
        or len(text.split(" ")) <= _title_max_words()
        or text.isupper()  # where spaCy's sentences may differ, its verdict would too
        or "..." in text
        or "\u2026" in text
        or is_bulleted_text(text)
        or is_email_address(text)
        or is_us_city_state_zip(text)
        or is_possible_numbered_list(text)
        or _sentences(text) < 2
    ):
        return element_from_text(text)
    threshold = float(os.environ.get("UNSTRUCTURED_NARRATIVE_TEXT_NON_ALPHA_THRESHOLD", 0.5))
    # two sentences: never over the capitals ratio, verbs unneeded (unstructured's rules)
    return Text(text=text) if under_non_alpha_ratio(text, threshold) else NarrativeText(text=text)


def _title_max_words() -> int:
    """unstructured's limit on a title's words; a value it could not read sends every
    paragraph its way (its error, where it would raise one)."""
    try:
        return int(os.environ.get("UNSTRUCTURED_TITLE_MAX_WORD_LENGTH", 12))
    except ValueError:
        return 1 << 30


def sentence_ends(text: str) -> list[int]:
    """Offsets where a sentence surely ends: after . ! or ? (and closing quotes), before a
    capital, unless the word before the stop is an initial or a common abbreviation."""
    ends = []
    for match in _SENTENCE_END.finditer(text):
        before = text[max(0, match.start() - 40) : match.start()].split()
        stem = before[-1].strip(_OPENING).rstrip(".!?" + _CLOSING).lower() if before else ""
        if len(stem) > 1 and "." not in stem and stem not in _ABBREVIATIONS:
            ends.append(match.end())
    return ends


def _sentences(text: str) -> int:
    """Sentences of three words or more, counted as unstructured's `sentence_count` does."""
    from unstructured.cleaners.core import remove_punctuation

    bounds = [0, *sentence_ends(text), len(text)]
    pieces = (text[a:b] for a, b in pairwise(bounds))
    return sum(
        1
        for piece in pieces
        if sum(1 for token in remove_punctuation(piece).split() if token != ".") >= 3
    )
