"""The parts of a PromQL expression that must each return data (for the scrape test)."""

from __future__ import annotations

import re

_BINARY = re.compile(r"\s(and|or|unless)\s|==|!=|>=|<=|>|<|(?<![a-z_])/|\s[-+*]\s")
_NUMBER = re.compile(r"^\(?\s*[-+]?[0-9.]+(e[-+]?[0-9]+)?\s*\)?$")
_NAME = re.compile(r"\b(quarry_[a-z0-9_]+|up)\b(?=\s*[{\[)\s]|\s*$)")


def operands(expr: str) -> list[str]:
    """The top-level operands of comparisons, set operators and arithmetic, numbers dropped:
    `a / b > 0.05` gives [a, b], so a threshold never hides an operand that has no data."""
    parts: list[str] = []
    depth, start, quoted, i = 0, 0, False, 0
    while i < len(expr):
        char = expr[i]
        if char == '"' and (i == 0 or expr[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char in "({[":
            depth += 1
        elif not quoted and char in ")}]":
            depth -= 1
        elif not quoted and depth == 0 and (match := _BINARY.match(expr, i)):
            parts.append(expr[start:i])
            i = start = match.end()
            continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts if p.strip() and not _NUMBER.match(p.strip())]


def metric_names(expr: str) -> set[str]:
    """Metric names the expression selects (Quarry's, and Prometheus's own `up`)."""
    return set(_NAME.findall(expr))
