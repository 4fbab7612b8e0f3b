"""A page of a collection's documents, found in the store, not in Python over all of them.

A document is its first chunk (its head) plus a count of its chunks. A page is taken in
(source, doc_id) order: the store counts the heads per source that pass the metadata filter
(a facet on the indexed `source` field: names and counts, no payload), Quarry picks the
sources that cover the page from those counts, and only the page's heads and chunk counts
are read. What crosses into Python for the whole collection is one name and one count per
source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from retrieval.models import DocumentInfo, payload_key


@dataclass(frozen=True)
class DocumentQuery:
    """Which documents, and which page of them."""

    offset: int = 0
    limit: int = 50
    source_part: str = ""  # part of the file name, any case
    meta: Mapping[str, str] = field(default_factory=dict)  # metadata key = value, all of them


EVERY_DOCUMENT = DocumentQuery(limit=1 << 62)
FACET_ALL = 1 << 31  # every value a facet finds


@dataclass
class DocumentPage:
    total: int
    documents: list[DocumentInfo]


@dataclass(frozen=True)
class SourceWindow:
    """The sources whose documents hold a page, and where the page starts among them."""

    total: int
    sources: list[str]
    skip: int  # documents of `sources` before the page's first
    every: bool  # `sources` are all the matching ones (no need to name them in a filter)


@dataclass(frozen=True)
class MetaMatch:
    """The payload values a wanted metadata value stands for."""

    key: str  # the payload key (`meta.<name>`)
    values: list[str | int | bool]  # matched exactly
    number: float | None = None  # a stored float that prints as the wanted text


def metadata_matches(meta: Mapping[str, str]) -> list[MetaMatch]:
    """Each wanted `key=value` as the stored values that print as `value`, as a search
    filter's would (a list matches when one item does): `5` is "5" or 5, `2.5` is 2.5,
    `True` is true; `05` is only "05".

    Raises:
        InvalidInputError: a key that cannot name a metadata field.
    """
    found = []
    for key, wanted in meta.items():
        payload_key(key)  # the same rule for a key as in search filters
        values: list[str | int | bool] = [wanted]
        number = None
        if re.fullmatch(r"-?(0|[1-9]\d{0,17})", wanted) and wanted != "-0":
            values.append(int(wanted))
        elif re.fullmatch(r"-?(0|[1-9]\d*)\.\d*[1-9]|-?(0|[1-9]\d*)\.0", wanted):
            number = float(wanted)
        if wanted in ("True", "False"):
            values.append(wanted == "True")
        found.append(MetaMatch(f"meta.{key}", values, number))
    return found


def window(heads_per_source: Mapping[str, int], query: DocumentQuery) -> SourceWindow:
    """The sources (in order) that cover `query`'s page, from each source's head count."""
    part = query.source_part.lower()
    ordered = sorted(s for s in heads_per_source if part in s.lower())
    total = sum(heads_per_source[s] for s in ordered)
    end = query.offset + query.limit
    seen, skip = 0, 0
    chosen: list[str] = []
    for source in ordered:
        count = heads_per_source[source]
        if seen + count > query.offset and seen < end:
            if not chosen:
                skip = query.offset - seen
            chosen.append(source)
        seen += count
        if seen >= end:
            break
    return SourceWindow(total, chosen, skip, len(chosen) == len(heads_per_source))


def page_of(
    heads: list[dict[str, Any]], chunks: Mapping[str, int], found: SourceWindow, limit: int
) -> DocumentPage:
    """The page, from the heads of the window's sources and their documents' chunk counts."""
    infos = sorted(
        (DocumentInfo.from_head(h, chunks.get(str(h.get("doc_id")), 0)) for h in heads),
        key=lambda info: (info.source, info.doc_id),
    )
    return DocumentPage(found.total, infos[found.skip : found.skip + limit])
