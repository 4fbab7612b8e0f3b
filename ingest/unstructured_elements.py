"""unstructured's partitioners, and their elements as Quarry's `Element`s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingest.models import Element


def partition(path: Path, **kwargs: Any) -> list[Any]:
    from unstructured.partition.auto import partition as auto_partition

    return list(auto_partition(filename=str(path), **kwargs))


def to_elements(raw: list[Any]) -> list[Element]:
    elements = []
    for item in raw:
        text = (getattr(item, "text", "") or "").strip()
        if not text:
            continue
        meta = getattr(item, "metadata", None)
        page = getattr(meta, "page_number", None)
        languages = tuple(getattr(meta, "languages", None) or ())
        elements.append(
            Element(text=text, type=type(item).__name__, page=page, languages=languages)
        )
    return elements
