"""`quarry migrate COLLECTION --model M [--dim D] | --rollback | --cancel | --status`
(`app.migration`), through the running server or here."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from app.cli_common import (
    ApiOpt,
    JsonOpt,
    console,
    emit,
    load_settings,
    quarry_for,
    reporting_errors,
)
from embedding.errors import InvalidInputError


def _line(state: dict[str, Any]) -> str:
    eta = f", about {state['eta_s']:.0f} s left" if state.get("eta_s") is not None else ""
    return f"{state['stage']}: {state['done']}/{state['total']} documents{eta}"


def migrate_command(
    collection: Annotated[str, typer.Argument(help="the collection to move")],
    model: Annotated[
        str | None,
        typer.Option("--model", help="the model to move to: a hub id or a local model folder"),
    ] = None,
    dim: Annotated[
        int | None, typer.Option("--dim", help="a Matryoshka width (Qwen3-Embedding)")
    ] = None,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="move back to the version the last one kept")
    ] = False,
    cancel: Annotated[bool, typer.Option("--cancel", help="stop one before its swap")] = False,
    status: Annotated[bool, typer.Option("--status", help="say how far one is")] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="follow it to its end (a server's)")
    ] = True,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a collection to another embedding model without downtime: built beside the
    live one (from kept originals, else stored chunk text), then swapped in at once; the
    old one is kept for --rollback. Asking again resumes an interrupted one."""
    if sum([bool(model), rollback, cancel, status]) != 1:
        with reporting_errors():
            raise InvalidInputError(
                "say one of --model M, --rollback, --cancel or --status",
                detail={"field": "model"},
            )
    with quarry_for(api, load_settings()) as quarry, reporting_errors():
        if status:
            state = quarry.migration(collection)
        elif cancel:
            state = quarry.cancel_migration(collection)
        else:
            spec = {"model": model or "", "dim": dim, "rollback": rollback}
            show = None if as_json else (lambda now: console.print(_line(now)))
            state = quarry.migrate(collection, spec, wait, show)
    if as_json:
        emit(state)
    else:
        target = state.get("to", {}).get("model") or state["model"]
        console.print(f"{escape(collection)} → {escape(str(target))}: {_line(state)}")
    if state.get("error") or (state["stage"] == "cancelled" and not cancel):
        raise typer.Exit(1)
