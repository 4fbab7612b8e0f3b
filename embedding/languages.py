"""Which languages a dense model reads, and which language a query is written in.

A dense ranking is only worth fusing for text the model was trained to read: the packaged
MiniLM reads English, so its vectors of an Arabic question are noise, and fusing them with
BM25 at equal weight halves BM25's quality. The model's languages come from its model card
(`language:` in README.md's front matter) or, without one, from a table of known models;
`None` means "every language" (Qwen3-Embedding reads more than 100).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

# Known models without a usable card: a name fragment -> the languages they read.
_TABLE: tuple[tuple[str, frozenset[str] | None], ...] = (
    ("qwen3-embedding", None),
    ("multilingual", None),
    ("bge-m3", None),
    ("labse", None),
    ("all-minilm", frozenset({"en"})),
    ("all-mpnet", frozenset({"en"})),
    ("bge-small-en", frozenset({"en"})),
    ("bge-base-en", frozenset({"en"})),
    ("bge-large-en", frozenset({"en"})),
    ("e5-small-v2", frozenset({"en"})),
    ("e5-base-v2", frozenset({"en"})),
    ("gte-small", frozenset({"en"})),
)
_MULTI_MARKERS = ("multilingual", "multi")

# The first letter of a Unicode name -> its script's usual language (for scripts that
# name one language well enough to say whether a model reads it).
_SCRIPTS = {
    "ARABIC": "ar",
    "HEBREW": "he",
    "CYRILLIC": "ru",
    "GREEK": "el",
    "DEVANAGARI": "hi",
    "BENGALI": "bn",
    "TAMIL": "ta",
    "THAI": "th",
    "HANGUL": "ko",
    "HIRAGANA": "ja",
    "KATAKANA": "ja",
    "CJK": "zh",
    "ARMENIAN": "hy",
    "GEORGIAN": "ka",
    "ETHIOPIC": "am",
}


def model_languages(model_id: str, folder: Path | None = None) -> frozenset[str] | None:
    """The ISO 639-1 codes the model reads (None: any language, or not known to be less)."""
    card = _card_languages(folder) if folder is not None else None
    if card is not None:
        return card
    name = model_id.lower()
    for fragment, languages in _TABLE:
        if fragment in name:
            return languages
    return None


def _card_languages(folder: Path) -> frozenset[str] | None:
    try:
        text = (folder / "README.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.match(r"---\s*\n(.*?)\n---", text, re.S)
    if match is None:
        return None
    front = match.group(1)
    single = re.search(r"^language:\s*([A-Za-z-]+)\s*$", front, re.M)
    listed = re.search(r"^language:\s*\n((?:\s*-\s*\S+\s*\n?)+)", front, re.M)
    codes: list[str] = []
    if single:
        codes = [single.group(1)]
    elif listed:
        codes = re.findall(r"-\s*(\S+)", listed.group(1))
    codes = [c.lower().split("-")[0] for c in codes]
    if not codes or any(c in _MULTI_MARKERS for c in codes) or len(codes) > 20:
        return None
    return frozenset(codes)


@lru_cache(maxsize=4096)
def _script(char: str) -> str | None:
    try:
        name = unicodedata.name(char)
    except ValueError:
        return None
    return name.split(" ", 1)[0]


def query_language(text: str) -> str:
    """The language a query is written in: its dominant script's (ar, zh, ja, ko, ru, hi,
    …), or for Latin script the language langdetect finds with confidence (else `en`)."""
    counts: dict[str, int] = {}
    for char in text:
        if not char.isalpha():
            continue
        script = _script(char) or "LATIN"
        counts[script] = counts.get(script, 0) + 1
    if not counts:
        return "en"
    if "HIRAGANA" in counts or "KATAKANA" in counts:  # Japanese mixes kana with Han
        return "ja"
    script = max(counts, key=lambda s: counts[s])
    if script in _SCRIPTS:
        return _SCRIPTS[script]
    return _latin_language(text)


# English function words that other languages written in Latin script rarely use as words
# (not "in", "a", "die", "de"): one of them settles it, where langdetect alone can take a
# terse technical English sentence for Italian.
_ENGLISH = frozenset(
    [
        "the",
        "of",
        "to",
        "and",
        "is",
        "are",
        "were",
        "with",
        "for",
        "that",
        "this",
        "what",
        "which",
        "who",
        "how",
        "why",
        "does",
        "do",
        "did",
        "from",
        "by",
        "at",
        "be",
        "been",
        "its",
        "not",
        "or",
        "can",
        "has",
        "have",
        "than",
        "when",
        "where",
        "there",
        "their",
        "these",
        "those",
        "into",
        "about",
        "after",
        "before",
        "between",
        "during",
        "without",
        "should",
        "would",
        "could",
    ]
)


@lru_cache(maxsize=8192)
def _latin_language(text: str) -> str:
    words = re.findall(r"\w+", text.lower())
    if len(words) < 3 or _ENGLISH.intersection(words):  # too short to tell, or English
        return "en"
    try:
        from langdetect import DetectorFactory, detect_langs
        from langdetect.lang_detect_exception import LangDetectException

        DetectorFactory.seed = 0
        found = detect_langs(text)
    except (ImportError, LangDetectException):
        return "en"
    best = found[0] if found else None
    if best is None or best.prob < 0.9:
        return "en"
    return str(best.lang).split("-")[0]


def reads(languages: frozenset[str] | None, language: str) -> bool:
    """Whether a model reading `languages` can read text in `language`."""
    return languages is None or language in languages
