"""The GPU memory panel's names are the ones Quarry exports where torch holds a CUDA context
(the scrape test runs on CPU, where they do not exist)."""

from __future__ import annotations

import json
import re
import sys
from types import SimpleNamespace

import pytest

from app.metrics import _gpu_metrics

from .conftest import MONITORING


def _panel_names() -> set[str]:
    board = json.loads((MONITORING / "grafana" / "dashboards" / "quarry.json").read_text())
    (panel,) = [p for p in board["panels"] if p["title"] == "GPU memory"]
    return {n for t in panel["targets"] for n in re.findall(r"quarry_gpu_\w+", t["expr"])}


class FakeCuda:
    """FakeTorch's CUDA: two devices whose memory figures are known (no GPU here)."""

    def is_initialized(self) -> bool:
        return True

    def device_count(self) -> int:
        return 2

    def memory_allocated(self, index: int) -> int:
        return 100 + index

    def memory_reserved(self, index: int) -> int:
        return 200 + index

    def get_device_properties(self, index: int) -> SimpleNamespace:
        return SimpleNamespace(total_memory=1000 + index)


def test_the_gpu_panel_reads_what_the_collector_exports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=FakeCuda()))
    families = {family.name: family for family in _gpu_metrics()}
    assert set(families) == _panel_names()
    samples = {
        (family.name, sample.labels["device"]): sample.value
        for family in families.values()
        for sample in family.samples
    }
    assert samples == {
        ("quarry_gpu_memory_allocated_bytes", "0"): 100,
        ("quarry_gpu_memory_allocated_bytes", "1"): 101,
        ("quarry_gpu_memory_reserved_bytes", "0"): 200,
        ("quarry_gpu_memory_reserved_bytes", "1"): 201,
        ("quarry_gpu_memory_total_bytes", "0"): 1000,
        ("quarry_gpu_memory_total_bytes", "1"): 1001,
    }


def test_no_cuda_context_no_gpu_series() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_initialized():
        pytest.skip("this process already holds a CUDA context")
    assert list(_gpu_metrics()) == []
    assert not torch.cuda.is_initialized()  # reading the metrics never makes one


@pytest.mark.gpu
def test_with_cuda_the_gpu_series_exist() -> None:
    import torch

    held = torch.zeros(1024, device="cuda")
    families = {family.name: family for family in _gpu_metrics()}
    assert set(families) == _panel_names()
    allocated = families["quarry_gpu_memory_allocated_bytes"].samples[0].value
    assert allocated >= held.numel() * held.element_size()
