"""Data flows one way: app -> ingest -> embedding / retrieval; the UI and the CLI's remote
side share the HTTP client package; nothing below `app/` imports it, `app/` never `ui/`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> the top-level packages of this repo it must never import
FORBIDDEN = {
    "app": {"ui"},
    "ingest": {"app", "ui", "client"},
    "embedding": {"app", "ui", "client", "ingest"},
    "retrieval": {"app", "ui", "client", "ingest"},
    "ui": {"app", "ingest", "embedding", "retrieval"},
    "client": {"app", "ui", "ingest", "embedding", "retrieval"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_against_the_flow(package: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in _imports(path) & FORBIDDEN[package]
    }
    assert not wrong, sorted(wrong)
