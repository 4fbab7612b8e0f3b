"""`key=value` arguments (CLI options and query parameters) into a dict."""

from __future__ import annotations

from typing import Any

from embedding.errors import InvalidInputError


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, Any]:
    """`key=value` options into a dict; a malformed one is a clear error naming it."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(
                f"{option} {pair!r}: expected key=value", detail={"field": option.lstrip("-")}
            )
        out[key.strip()] = value
    return out
