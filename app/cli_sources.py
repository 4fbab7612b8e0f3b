"""`quarry sources`: named sources a collection follows (`app.sources`), on the one seam:
through the running server (which also runs their schedules), or here when none runs."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from app.cli_common import ApiOpt, CollectionOpt, JsonOpt, console, emit, load_settings, quarry_for
from app.pairs import parse_pairs

sources_app = typer.Typer(no_args_is_help=True, help="Folders and buckets a collection follows.")


@sources_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="what to call it")],
    folder: Annotated[str | None, typer.Option("--folder", help="a folder")] = None,
    s3: Annotated[str | None, typer.Option("--s3", help="s3://BUCKET/PREFIX")] = None,
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="an S3-compatible server's URL (MinIO, R2)")
    ] = "",
    every: Annotated[
        str | None, typer.Option("--every", help="sync this often (30s, 15m, 1h) while served")
    ] = None,
    max_delete: Annotated[
        float, typer.Option("--max-delete", min=0, max=1, help="share a run may delete")
    ] = 0.5,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="key=value metadata")] = None,
    collection: CollectionOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Follow a folder or a bucket prefix (synced by `sources sync`, or by the server's
    schedule with --every)."""
    settings = load_settings()
    spec: dict[str, Any] = {"name": name, "endpoint": endpoint, "max_delete": max_delete}
    spec |= {"folder": folder, "s3": s3, "every": every, "collection": collection}
    with quarry_for(api, settings) as target:
        spec["metadata"] = parse_pairs(meta, "--meta")
        added = target.add_source(spec)
    if as_json:
        emit(added)
    else:
        console.print(f"{escape(name)}: follows {escape(added['location'])}")


@sources_app.command("list")
def list_(api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Every source and what its last run did."""
    with quarry_for(api, load_settings()) as target:
        found = target.sources()
    if as_json:
        emit(found)
        return
    table = Table("name", "follows", "collection", "every", "last sync", "outcome")
    for source in found:
        table.add_row(
            escape(source["name"]),
            escape(source["location"]),
            escape(source["collection"]),
            f"{source['every_s']} s" if source["every_s"] else "-",
            _when(source["last_finished"]),
            escape(outcome(source)),
        )
    console.print(table)


@sources_app.command("remove")
def remove(name: str, api: ApiOpt = None) -> None:
    """Stop following a source (its documents stay)."""
    with quarry_for(api, load_settings()) as target:
        target.remove_source(name)
    console.print(f"{escape(name)}: no longer followed (its documents stay)")


@sources_app.command("sync")
def sync(name: str, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Run a source's sync now and wait for it."""
    with quarry_for(api, load_settings()) as target:
        done = target.sync_named(name)
    if as_json:
        emit(done)
    else:
        console.print(f"{escape(name)}: {escape(outcome(done))}")
    if done["last_error"]:
        raise typer.Exit(1)


def outcome(source: dict[str, Any]) -> str:
    """A run's outcome in a line (the CLI's and the UI's)."""
    if source.get("running"):
        return "running"
    error = source.get("last_error")
    report = source.get("last_report")
    said = ""
    if report:
        done = report["ingest"]
        said = (
            f"{report['listed']} files, {done['ingested']} ingested, {report['unchanged']} "
            f"unchanged, {len(report['deleted'])} deleted, {len(done['errors'])} failed"
        )
    if error:
        said = f"{said}; " if said else ""
        return f"{said}{error['message']} ({error['code']})"
    return said or "never synced"


def _when(epoch: float | None) -> str:
    return dt.datetime.fromtimestamp(epoch).isoformat(timespec="seconds") if epoch else "-"
