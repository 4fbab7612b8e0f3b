"""`quarry backup DEST [--verify]` and `quarry restore SRC [--force]` (`app.backup`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from app import backup as backups
from app.cli_common import (
    ApiOpt,
    JsonOpt,
    console,
    emit,
    load_settings,
    quarry_for,
    reporting_errors,
)
from app.ownership import running_server
from embedding.errors import InvalidInputError


def backup_command(
    dest: Annotated[Path, typer.Argument(help="a new folder for it (or one to --verify)")],
    verify: Annotated[
        bool, typer.Option("--verify", help="check the backup in DEST against its checksums")
    ] = False,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Back up the data dir (collections, kept originals, failure ledgers, sources) into
    DEST, through the running server or here; or check one with --verify."""
    if verify:
        problems = backups.verify(dest)
        if as_json:
            emit({"backup": str(dest), "ok": not problems, "problems": problems})
        for problem in problems if not as_json else []:
            console.print(f"[red]✗[/red] {escape(problem)}")
        if problems:
            raise typer.Exit(1)
        if not as_json:
            console.print(f"{escape(str(dest))}: every file matches its checksum")
        return
    with quarry_for(api, load_settings()) as target:
        manifest = target.backup(dest)
    summary = {
        "backup": str(dest),
        "collections": manifest["collections"],
        "files": len(manifest["files"]),
        "bytes": sum(size for size, _ in manifest["files"].values()),
    }
    if as_json:
        emit(summary)
    else:
        console.print(
            f"{escape(str(dest))}: {len(summary['collections'])} collections, "
            f"{summary['files']} files, {summary['bytes']:,} bytes; verify with "
            "`quarry backup --verify`"
        )


def restore_command(
    src: Annotated[Path, typer.Argument(help="a folder `quarry backup` made")],
    force: Annotated[
        bool, typer.Option("--force", help="replace a data dir that holds data")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup into the data dir QUARRY_DATA_DIR names (no server may run on it)."""
    settings = load_settings()
    with reporting_errors():
        if running_server(settings.data_dir) is not None:
            raise InvalidInputError(
                f"a server runs on {settings.data_dir}: stop it before restoring into it"
            )
        done = backups.restore(src, settings, force)
    if as_json:
        emit(done)
    else:
        console.print(
            f"{escape(str(src))} restored into {escape(done['into'])}: "
            f"{len(done['collections'])} collections"
        )
