"""Parsing in worker processes that can be killed: a runaway file costs a timeout, not the server.

A thread cannot be stopped, and a parser stuck on a hostile file (a decompression bomb, a
PDF of ten thousand pages, 50 MB on one line) would otherwise hold a core and gigabytes of
the server's memory for good. Each parse runs in a pebble worker process with an address-
space bound; past its time limit the worker is killed and replaced, and the file gets a
clear `timeout` or `too_large` error while the other files go on.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from pebble import ProcessExpired, ProcessPool

from ingest.models import Element, ParseError, Stopped, TransientError
from ingest.ocr import OcrOptions
from ingest.parsing import ParseOptions, parse_file

log = logging.getLogger(__name__)

# Imported once in the fork server, so forked workers start with them mapped: a worker's
# memory bound then limits what a file costs, not what the libraries cost.
_PRELOAD = [
    "ingest.parsing",
    "unstructured.partition.auto",
    "unstructured.partition.text",
    "unstructured.partition.html",
    "unstructured.partition.docx",
    "unstructured.partition.pdf",
    "unstructured.partition.email",
    "unstructured.partition.image",
    "pypdfium2",
    "spacy",
    "ingest.parse_preload",
]
_OUT_OF_MEMORY = ("failed to map segment", "cannot allocate memory", "std::bad_alloc")


@dataclass(frozen=True)
class ParseLimits:
    workers: int = 2
    timeout_s: float = 300.0
    memory_mb: int = 3072  # address space of one worker process
    max_inflated_mb: int = 512  # what the parts of a zip-based document may inflate to
    ocr: OcrOptions = field(default_factory=OcrOptions)
    ocr_page_s: float = 30.0  # more time a PDF gets per page, for the pages it must OCR
    convert_timeout_s: float = 120.0

    def options(self) -> ParseOptions:
        return ParseOptions(self.max_inflated_mb * 1024 * 1024, self.ocr, self.convert_timeout_s)


def pdf_page_count(path: Path) -> int:
    """Pages of a PDF by poppler's `pdfinfo`, in its own process (a hostile file must not
    reach a parser inside the server); 1 when it cannot tell."""
    import subprocess

    try:
        info = subprocess.run(
            ["pdfinfo", str(path)], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return 1
    for line in info.stdout.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "Pages:" and words[1].isdigit():
            return max(1, int(words[1]))
    return 1


def _start_worker(memory_mb: int) -> None:
    """Parsing is background work: it yields the CPU to queries (nice +10), and its
    address space is bounded as a backstop (a process that meets that limit can wedge, so
    the parent kills a worker well before, when its resident memory passes `memory_mb`)."""
    os.nice(10)
    # Tesseract's OpenMP threads fight each other when workers OCR side by side.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    mapped = psutil.Process().memory_info().vms  # the libraries, mapped once by the fork server
    limit = mapped + 2 * memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _worker_pids(pool: ProcessPool) -> list[int]:
    """The pool's worker processes (pebble keeps them by pid)."""
    try:
        return list(pool._pool_manager.worker_manager.workers)
    except AttributeError:  # another pebble: the address-space backstop still holds
        return []


def _kill_over(pids: list[int], limit_bytes: int) -> None:
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.memory_info().rss > limit_bytes:
                log.warning("parse worker %d passed its memory bound; stopping it", pid)
                process.kill()
        except psutil.Error:
            continue


def _parse_in_worker(path: str, name: str, options: ParseOptions) -> list[Element]:
    try:
        return parse_file(Path(path), name, options)
    except ParseError:
        raise
    except MemoryError as exc:
        raise ParseError("too_large", f"{name}: parsing it needs more memory than allowed") from exc
    except Exception as exc:  # only ParseError crosses back: the parent must not guess
        text = str(exc).lower()
        if any(sign in text for sign in _OUT_OF_MEMORY):
            raise ParseError(
                "too_large", f"{name}: parsing it needs more memory than allowed"
            ) from exc
        raise ParseError(
            "unreadable",
            f"{name}: the parser failed ({type(exc).__name__}: {str(exc)[:200]})",
            suspect=True,
        ) from exc


class ParsePool:
    """Parses files in killable worker processes; started on first use."""

    def __init__(self, limits: ParseLimits) -> None:
        self.limits = limits
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()

    def _get(self) -> ProcessPool:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(_PRELOAD)
                self._pool = ProcessPool(
                    max_workers=self.limits.workers,
                    max_tasks=200,  # recycle workers now and then: parsers leak
                    initializer=_start_worker,
                    initargs=(self.limits.memory_mb,),
                    context=context,
                )
            return self._pool

    def parse(
        self, path: Path, name: str, check: Callable[[], None] = lambda: None
    ) -> list[Element]:
        """Elements of the file at `path`, or a ParseError naming `name` and the reason.

        Raises:
            ParseError: the file's own fault, `timeout` and `too_large` included.
            Stopped: raised by `check` (called twice a second); the worker is killed.
        """
        timeout_s = self.time_limit(path)
        try:
            future = self._get().submit(
                _parse_in_worker, timeout_s, str(path), name, self.limits.options()
            )
        except (BrokenProcessPool, RuntimeError) as exc:  # a pool that lost its workers
            self._discard()
            raise TransientError(f"{name}: the parse workers could not start ({exc})") from exc
        limit_bytes = self.limits.memory_mb * 1024 * 1024
        while True:
            try:
                return future.result(timeout=0.25)
            except FutureTimeout:
                if future.done():  # pebble's own time limit ran out
                    break
                with self._lock:
                    pool = self._pool
                if pool is not None:
                    _kill_over(_worker_pids(pool), limit_bytes)
                try:
                    check()
                except Stopped:
                    future.cancel()  # kills the worker that holds it
                    raise
            except BrokenProcessPool as exc:
                self._discard()
                raise TransientError(f"{name}: the parse workers died ({exc})") from exc
            except ProcessExpired as exc:
                if exc.exitcode == -9:  # killed for its memory (by us or the kernel)
                    raise ParseError(
                        "too_large",
                        f"{name}: parsing it needs more than the {self.limits.memory_mb} MB "
                        "allowed per file (QUARRY_PARSE_MEMORY_MB)",
                    ) from exc
                raise ParseError(
                    "unreadable",
                    f"{name}: the parser process died on this file (exit code {exc.exitcode})",
                    suspect=True,
                ) from exc
        try:
            return future.result(timeout=0)
        except FutureTimeout as exc:
            raise ParseError(
                "timeout",
                f"{name}: parsing took longer than the {timeout_s:g} s allowed "
                "(QUARRY_PARSE_TIMEOUT_S per file, QUARRY_OCR_PAGE_TIMEOUT_S more per PDF page)",
            ) from exc

    def time_limit(self, path: Path) -> float:
        """The file's time limit: a PDF gets more per page, as its pages may all be scans."""
        if path.suffix.lower() != ".pdf":
            return self.limits.timeout_s
        return self.limits.timeout_s + self.limits.ocr_page_s * pdf_page_count(path)

    def _discard(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.stop()
                self._pool.join(timeout=10)
                self._pool = None
