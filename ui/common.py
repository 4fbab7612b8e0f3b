"""What every page shares: the API client, error display and formatting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import streamlit as st

from client import ApiClient, ApiError
from client.config import UiSettings

T = TypeVar("T")

STYLE = """
<style>
mark { background: #fde68a; padding: 0 .15em; border-radius: .2em; }
.chunk { font-size: .95rem; line-height: 1.55; white-space: pre-wrap; }
</style>
"""


@st.cache_resource
def api() -> ApiClient:
    return ApiClient(UiSettings())


def call(fn: Callable[[], T], what: str) -> T | None:
    """Run one API call; show a readable message instead of a traceback when it fails."""
    try:
        return fn()
    except ApiError as exc:
        st.error(f"Could not {what}: {exc.message}", icon=":material/error:")
        return None


def page_header(title: str, caption: str) -> None:
    st.html(STYLE)
    st.title(title)
    st.caption(caption)


def size(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def when(stamp: str | float | None) -> str:
    if stamp is None or stamp == "":
        return ""
    moment = (
        datetime.fromtimestamp(stamp)
        if isinstance(stamp, int | float)
        else datetime.fromisoformat(stamp)
    )
    return moment.strftime("%Y-%m-%d %H:%M")


def tags_of(doc: dict[str, Any]) -> list[str]:
    tags = (doc.get("metadata") or {}).get("tags") or []
    return [str(t) for t in tags] if isinstance(tags, list) else [str(tags)]
