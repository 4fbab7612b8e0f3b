"""What every `quarry` verb shares: settings, errors, the seam (here or a server), output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from app import service_http as remote
from app.ownership import running_server
from app.resources import Resources
from app.service import Quarry
from app.service_local import LocalQuarry
from app.settings import Settings
from embedding.errors import QuarryError

console = Console(stderr=True)

CollectionOpt = Annotated[str | None, typer.Option("--collection", "-c", help="collection name")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
ModeOpt = Annotated[
    str | None,
    typer.Option(
        "--mode", help="dense, sparse (BM25) or hybrid (default: hybrid where BM25 vectors exist)"
    ),
]


ApiOpt = Annotated[
    str | None,
    typer.Option("--api", help="a Quarry server's URL (default: the one owning the data dir)"),
]


def load_settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        console.print(f"[red]error:[/red] invalid settings: {exc}")
        raise typer.Exit(2) from exc


@contextmanager
def reporting_errors() -> Iterator[None]:
    try:
        yield
    except QuarryError as exc:
        console.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from exc


@contextmanager
def opened_resources(settings: Settings | None = None) -> Iterator[Resources]:
    resources = Resources(settings or load_settings())
    try:
        with reporting_errors():
            yield resources
    finally:
        resources.close()


def server_for(api: str | None, settings: Settings) -> str | None:
    """The server to send the work to: named, or the live owner of the data dir."""
    named = api or os.environ.get("QUARRY_API_URL")
    if named:
        return named
    if settings.qdrant_url and settings.redis_url:
        return None  # nothing embedded: this process can open the store itself
    return running_server(settings.data_dir)


@contextmanager
def quarry_for(api: str | None, settings: Settings) -> Iterator[Quarry]:
    """Quarry through the server owning the data dir (or the one named), else here: the
    verbs below never ask which."""
    url = server_for(api, settings)
    with reporting_errors():
        target: Quarry = (
            remote.connect(url, os.environ.get("QUARRY_API_KEY"))
            if url
            else LocalQuarry(Resources(settings))
        )
    try:
        with reporting_errors():
            yield target
    finally:
        target.close()


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
