"""Words stemmed by their own script before BM25 reads them: Cyrillic, Greek and Arabic.

BM25's tokenizer stems English (Snowball) and passes every other word through as written,
so an inflected Russian, Greek or Arabic word matches only its exact form. Choosing a
stemmer per text by its detected language is fragile: a query detected as another
language than its passage (short queries, mixed scripts) gets other stems, and the match
is lost (measured: worse than no stemming for Dutch and Portuguese). A word's script,
though, is a property of the word alone, so queries and documents are stemmed alike
whatever their language: a Cyrillic word is stemmed by Snowball's Russian stemmer (which
helps Ukrainian and Serbian as much), a Greek word by Greek, an Arabic-script word by
Arabic (which also strips diacritics and unifies letter variants). Latin-script text is
left to the tokenizer's English stemmer, as before. Scripts whose stemmer showed no gain
(Devanagari, Tamil) are left alone (`bench/analysers.py` measures each).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from functools import lru_cache

import snowballstemmer

# A word's first letter's script (its Unicode name's first word) -> Snowball's stemmer.
STEMMED_SCRIPTS = {"CYRILLIC": "russian", "GREEK": "greek", "ARABIC": "arabic"}
# Any letter of those scripts (Greek, Cyrillic + supplement, Arabic + supplement, and
# Arabic presentation forms): text without one is returned as it is, at no cost.
_STEMMED_LETTERS = re.compile(
    r"[\u0370-\u03ff\u0400-\u052f\u0600-\u06ff\u0750-\u077f\ufb50-\ufeff]"
)
# A word: letters and digits with their combining marks (Arabic vowel signs, combining
# accents), which `\w` alone would split the word at.
_WORD = re.compile(r"(?:\w|[\u0300-\u036f\u0483-\u0489\u064b-\u065f\u0670\u06d6-\u06ed])+")
_local = threading.local()  # Snowball's stemmers keep state: one set per thread


def _stemmers() -> dict[str, snowballstemmer.Stemmer]:
    found: dict[str, snowballstemmer.Stemmer] | None = getattr(_local, "stemmers", None)
    if found is None:
        found = {s: snowballstemmer.stemmer(lang) for s, lang in STEMMED_SCRIPTS.items()}
        _local.stemmers = found
    return found


@lru_cache(maxsize=8192)
def _script(char: str) -> str:
    try:
        return unicodedata.name(char).split(" ", 1)[0]
    except ValueError:
        return ""


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    letter = next((c for c in word if c.isalpha()), "")
    stemmer = _stemmers().get(_script(letter)) if letter else None
    return stemmer.stemWord(word.lower()) if stemmer is not None else word


def stem_by_script(text: str) -> str:
    """`text` with each Cyrillic, Greek and Arabic-script word replaced by its stem."""
    if not _STEMMED_LETTERS.search(text):
        return text
    return _WORD.sub(lambda m: _stem(m.group(0)), text)
