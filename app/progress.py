"""Rich progress bars for long CLI work: files, chunks/s and ETA."""

from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ingest.models import FileError


class RichIngestProgress:
    """An `IngestObserver` drawing two bars: files done, and chunks stored with their rate."""

    def __init__(self, total_files: int, console: Console, enabled: bool = True) -> None:
        self.console = console
        self._shown = enabled  # disabled, the caller prints the report's errors at the end
        self._progress = Progress(
            TextColumn("[bold]{task.description:<8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self._files = self._progress.add_task("files", total=total_files, rate="")
        self._chunks = self._progress.add_task("chunks", total=0, rate="")
        self._queued = 0
        self._lock = threading.Lock()

    def __enter__(self) -> RichIngestProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def file_done(self, name: str, status: str, chunks: int, error: FileError | None) -> None:
        self._progress.advance(self._files)
        if error is not None and self._shown:
            self._progress.console.print(
                f"[red]✗[/red] {escape(error.message)} [dim]({error.code})[/dim]"
            )

    def file_retry(self, name: str, error: FileError) -> None:
        self._progress.advance(self._files)
        if not self._shown:
            return
        self._progress.console.print(
            f"[yellow]![/yellow] {escape(error.message)} [dim]({error.code}; temporary: "
            "run the command again)[/dim]"
        )

    def file_stage(self, name: str, stage: str, count: int) -> None:
        pass

    def file_warning(self, name: str, message: str) -> None:
        if self._shown:
            self._progress.console.print(f"[yellow]![/yellow] {escape(message)}")

    def check(self) -> None:
        pass

    def chunks_queued(self, count: int) -> None:
        with self._lock:
            self._queued += count
            self._progress.update(self._chunks, total=self._queued)

    def chunks_embedded(self, count: int) -> None:
        pass

    def chunks_stored(self, count: int) -> None:
        self._progress.advance(self._chunks, count)
        task = self._progress.tasks[self._chunks]
        if task.speed:
            self._progress.update(self._chunks, rate=f"{task.speed:,.0f} chunks/s")
