"""deploy/monitoring's generator, imported from its path (deploy/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "quarry_monitoring_generate", MONITORING / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def generator() -> ModuleType:
    pytest.importorskip("grafana_foundation_sdk", reason="needs grafana-foundation-sdk (dev extra)")
    return load_generator()
