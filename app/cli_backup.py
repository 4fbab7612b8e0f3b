"""`quarry backup DEST [--verify]` and `quarry restore SRC [--force]` (`app.backup`); DEST
and SRC a folder or an S3-compatible `s3://BUCKET/PREFIX` (`app.backup_s3`)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from app import backup as backups
from app import backup_s3
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

EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint", envvar="AWS_ENDPOINT_URL", help="an S3-compatible server's URL (MinIO, R2)"
    ),
]


@contextmanager
def _local(where: str, endpoint: str | None, fetch: bool) -> Iterator[Path]:
    """A local folder for the backup at `where`: itself, or (an s3:// address) a temporary
    one, filled from the bucket first when `fetch`."""
    if not where.startswith("s3://"):
        yield Path(where)
        return
    with tempfile.TemporaryDirectory(prefix="quarry-backup-") as scratch:
        folder = Path(scratch) / "backup"
        folder.mkdir()
        if fetch:
            with reporting_errors():
                backup_s3.download(where, folder, endpoint)
        yield folder


def backup_command(
    dest: Annotated[str, typer.Argument(help="a new folder or s3:// prefix (or one to --verify)")],
    verify: Annotated[
        bool, typer.Option("--verify", help="check the backup in DEST against its checksums")
    ] = False,
    endpoint: EndpointOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Back up the data dir (collections, kept originals, failure ledgers, sources) into
    DEST, through the running server or here; or check one with --verify."""
    if verify:
        with _local(dest, endpoint, fetch=True) as folder:
            _verify(dest, folder, as_json)
        return
    with _local(dest, endpoint, fetch=False) as folder, quarry_for(api, load_settings()) as target:
        manifest = target.backup(folder)
        if dest.startswith("s3://"):
            backup_s3.upload(folder, dest, endpoint)
    _summary(dest, manifest, as_json)


def _verify(dest: str, folder: Path, as_json: bool) -> None:
    problems = backups.verify(folder)
    if as_json:
        emit({"backup": dest, "ok": not problems, "problems": problems})
    for problem in problems if not as_json else []:
        console.print(f"[red]✗[/red] {escape(problem)}")
    if problems:
        raise typer.Exit(1)
    if not as_json:
        console.print(f"{escape(dest)}: every file matches its checksum")


def _summary(dest: str, manifest: dict[str, Any], as_json: bool) -> None:
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
    src: Annotated[str, typer.Argument(help="a folder or s3:// prefix `quarry backup` made")],
    force: Annotated[
        bool, typer.Option("--force", help="replace a data dir that holds data")
    ] = False,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup into the data dir QUARRY_DATA_DIR names (no server may run on it)."""
    settings = load_settings()
    with reporting_errors():
        if running_server(settings.data_dir) is not None:
            raise InvalidInputError(
                f"a server runs on {settings.data_dir}: stop it before restoring into it"
            )
    with _local(src, endpoint, fetch=True) as folder, reporting_errors():
        done = backups.restore(folder, settings, force) | {"restored": src}
    if as_json:
        emit(done)
    else:
        console.print(
            f"{escape(str(src))} restored into {escape(done['into'])}: "
            f"{len(done['collections'])} collections"
        )
