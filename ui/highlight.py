"""Marks a query's words in a chunk's text, as safe HTML."""

from __future__ import annotations

import html
import re

_STOPWORD_TEXT = """a an and are as at be by for from how in is it of on or that the this to was
what when where which who why with does do did can"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


_SUFFIXES = ("ing", "ed", "es", "s", "ly")


def _stem(word: str) -> str:
    """A crude stem, so that "hunting" also marks "hunt" and "hunts"."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def query_terms(query: str) -> list[str]:
    words = {w.lower() for w in re.findall(r"\w+", query) if len(w) > 2} - _STOPWORDS
    return sorted({_stem(w) for w in words}, key=len, reverse=True)


def highlight(text: str, query: str) -> str:
    """`text` HTML-escaped, with the query's words (and words starting with them) in <mark>."""
    escaped = html.escape(text)
    terms = query_terms(query)
    if not terms:
        return escaped
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in terms) + r")\w*", re.IGNORECASE)
    return pattern.sub(lambda m: f"<mark>{m.group(0)}</mark>", escaped)
