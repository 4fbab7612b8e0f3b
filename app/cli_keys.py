"""`quarry keys`: API keys with scopes and limits, and the audit log, on the one seam
(through the running server with an admin key, or here on the data dir's Redis)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from app.cli_common import ApiOpt, JsonOpt, console, emit, load_settings, quarry_for

keys_app = typer.Typer(no_args_is_help=True, help="API keys with scopes and limits.")


def _when(at: float) -> str:
    return dt.datetime.fromtimestamp(at).isoformat(sep=" ", timespec="seconds")


def _limits(key: dict[str, Any]) -> str:
    lim = key["limits"]
    parts = []
    if lim["rps"]:
        parts.append(f"{lim['rps']:g}/s burst {lim['burst']}")
    if lim["upload_mb_per_hour"]:
        parts.append(f"{lim['upload_mb_per_hour']:g} MB/h uploads")
    return ", ".join(parts) or "none"


@keys_app.command("create")
def create(
    scope: Annotated[str, typer.Option("--scope", help="read, write or admin")],
    name: Annotated[str, typer.Option("--name", help="who or what uses it")] = "key",
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="limit it to this collection (repeatable)"),
    ] = None,
    rps: Annotated[float | None, typer.Option("--rps", help="requests a second (0: none)")] = None,
    burst: Annotated[int | None, typer.Option("--burst", help="requests at once")] = None,
    upload_mb_per_hour: Annotated[
        float | None, typer.Option("--upload-mb-per-hour", help="upload MB an hour (0: none)")
    ] = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a key; it is printed this once (only its hash is kept)."""
    spec: dict[str, Any] = {"name": name, "scope": scope, "collections": collection or []}
    spec |= {"rps": rps, "burst": burst, "upload_mb_per_hour": upload_mb_per_hour}
    with quarry_for(api, load_settings()) as target:
        made = target.create_key(spec)
    if as_json:
        emit(made)
        return
    console.print(
        f"key {made['id']} ({escape(made['name'])}), scope {made['scope']}, collections "
        f"{', '.join(made['collections']) or 'all'}, limits {_limits(made)}; "
        "it is shown this once:"
    )
    typer.echo(made["key"])


@keys_app.command("list")
def list_(api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Every stored key (the keys of QUARRY_API_KEYS are not listed)."""
    with quarry_for(api, load_settings()) as target:
        found = target.keys()
    if as_json:
        emit(found)
        return
    table = Table("id", "name", "scope", "collections", "limits", "created")
    for key in found:
        table.add_row(
            key["id"],
            escape(key["name"]),
            key["scope"],
            ", ".join(key["collections"]) or "all",
            _limits(key),
            _when(key["created_at"]),
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (`quarry keys list`)")],
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key: refused from its next request, on every replica."""
    with quarry_for(api, load_settings()) as target:
        revoked = target.revoke_key(key_id)
    if as_json:
        emit(revoked)
    else:
        console.print(f"revoked key {key_id} ({escape(revoked['revoked']['name'])})")


@keys_app.command("audit")
def audit(
    limit: Annotated[int, typer.Option("--limit", min=1, help="entries, newest first")] = 50,
    key_id: Annotated[str | None, typer.Option("--key", help="one key's actions")] = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Who did what, when, and with what result (every write and admin action)."""
    with quarry_for(api, load_settings()) as target:
        entries = target.audit(limit, key_id)
    if as_json:
        emit(entries)
        return
    table = Table("when", "key", "action", "status", "reason")
    for e in entries:
        who = f"{e['key_id'] or '-'} {escape(e['key_name'])}".strip()
        query = f"?{e['query']}" if e["query"] else ""
        action = escape(f"{e['method']} {e['path']}{query}")
        table.add_row(_when(e["at"]), who, action, str(e["status"]), escape(e["reason"]))
    console.print(table)
