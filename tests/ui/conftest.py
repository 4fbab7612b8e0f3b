"""A real API process on the embedded defaults (MiniLM) for the UI to talk to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..servers import Process, quarry_env


@pytest.fixture(scope="module")
def api_server(
    tmp_path_factory: pytest.TempPathFactory, minilm_path: str, redis_process: Any
) -> Iterator[Process]:
    folder = tmp_path_factory.mktemp("ui-api")
    # A private Redis database: job lists in the UI start empty.
    env = quarry_env(folder / "data", minilm_path, redis_process.url.rsplit("/", 1)[0] + "/3")
    server = Process("serve", env, folder / "api.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def ui_env(api_server: Process, monkeypatch: pytest.MonkeyPatch) -> str:
    import streamlit as st

    monkeypatch.setenv("QUARRY_API_URL", api_server.url)
    st.cache_resource.clear()
    return api_server.url


PAGES = Path(__file__).resolve().parents[2] / "ui" / "views"
