"""Named sources a collection follows: a folder or a bucket prefix, synced on a schedule.

`quarry sources add NAME --folder PATH | --s3 s3://BUCKET/PREFIX [--every 15m]` records a
source (in the data dir's `sources/`, one JSON file each, replaced atomically); a run of it
is the same `quarry sync` as ever (`app.sync`), and its outcome (when, the counts, the
errors, a refusal) is kept beside it for `sources list`, `/v1/sources` and the UI's Sources
page. The server runs each source whose schedule is due (`SourceRunner`), one run of a
source at a time; without a server, `quarry sources sync NAME` runs it here.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import BaseModel, Field, model_validator

from app.schemas import COLLECTION_PATTERN, checked_body
from app.sync import SyncReport, SyncTarget, sync_source
from app.sync_sources import open_source
from embedding.errors import InvalidInputError, QuarryError
from ingest.pipeline import SilentObserver
from retrieval.errors import NotFoundError

SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_EVERY = re.compile(r"(\d+)\s*([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: str | None) -> int:
    """`15m`, `1h30m`, `90s`, `2d` -> seconds (0: no schedule)."""
    if not text or text.strip() in ("0", "never"):
        return 0
    parts = _EVERY.findall(text.replace(" ", ""))
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
        raise InvalidInputError(
            f"every: {text!r} is not a period such as 30s, 15m, 1h or 1h30m",
            detail={"field": "every"},
        )
    seconds = sum(int(n) * _UNIT_S[u] for n, u in parts)
    if seconds < 10:
        raise InvalidInputError("every: at least 10s", detail={"field": "every"})
    return seconds


@dataclass
class Source:
    name: str
    location: str  # a folder's absolute path or an s3:// address
    collection: str
    endpoint: str = ""  # an S3-compatible server's URL ("" = AWS, or AWS_ENDPOINT_URL)
    every_s: int = 0  # the schedule (0: only when asked)
    max_delete: float = 0.5
    metadata: dict[str, Any] = field(default_factory=dict)
    # What the last run did
    last_started: float | None = None
    last_finished: float | None = None
    last_report: dict[str, Any] | None = None
    last_error: dict[str, str] | None = None
    running: bool = False
    progress: dict[str, Any] | None = None  # the run going on: its stage and counts so far
    runs: int = 0  # runs started, ever: a run asked for is done once this passes its number

    def due(self, now: float) -> bool:
        if not self.every_s or self.running:
            return False
        return self.last_finished is None or now - self.last_finished >= self.every_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SourceRegistry:
    """The sources of a data dir, one JSON file each."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def add(self, source: Source) -> Source:
        if not SOURCE_NAME.fullmatch(source.name):
            raise InvalidInputError(
                f"name: {source.name!r} must be letters, digits, '.', '_' or '-' (at most 64)",
                detail={"field": "name"},
            )
        if source.location.startswith("s3://"):
            open_source(source.location, source.endpoint or None)  # a well-formed address
        else:
            folder = Path(source.location).expanduser()
            if not folder.is_dir():
                raise InvalidInputError(
                    f"folder: {source.location} is not a folder", detail={"field": "folder"}
                )
            source.location = str(folder.resolve())
        with self._lock:
            if self._path(source.name).exists():
                raise InvalidInputError(
                    f"name: a source called {source.name!r} exists already (remove it first)",
                    detail={"field": "name"},
                )
            self._write(source)
        return source

    def get(self, name: str) -> Source:
        try:
            data = json.loads(self._path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise NotFoundError(f"no source {name!r}", detail={"source": name}) from exc
        return Source(**data)

    def list(self) -> list[Source]:
        names = sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.is_dir() else []
        found = []
        for name in names:
            try:
                found.append(self.get(name))
            except NotFoundError:  # removed meanwhile
                continue
        return found

    def remove(self, name: str) -> Source:
        """Forget a source (its documents stay in the collection)."""
        with self._lock:
            source = self.get(name)
            self._path(name).unlink(missing_ok=True)
        return source

    def update(self, name: str, **changes: Any) -> Source:
        with self._lock:
            source = self.get(name)
            for key, value in changes.items():
                setattr(source, key, value)
            self._write(source)
        return source

    def _write(self, source: Source) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        replace_file(self._path(source.name), json.dumps(source.to_dict(), ensure_ascii=False))


def replace_file(path: Path, text: str) -> None:
    """`path` replaced atomically by `text` (through a temporary name of its own: processes
    writing side by side never rename each other's)."""
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as fresh:
        fresh.write(text)
    os.replace(fresh.name, path)


class SourceIn(BaseModel):
    """A source to follow: a folder or an S3-compatible bucket prefix (the API's body and
    the CLI's options alike)."""

    name: str = Field(pattern=SOURCE_NAME.pattern)
    folder: str | None = Field(default=None, description="a folder (on the server)")
    s3: str | None = Field(default=None, description="s3://BUCKET/PREFIX")
    endpoint: str = Field(default="", description="an S3-compatible server's URL")
    collection: str | None = Field(default=None, pattern=COLLECTION_PATTERN)
    every: str | None = Field(default=None, description="30s, 15m, 1h: synced this often")
    max_delete: float = Field(default=0.5, ge=0, le=1)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_location(self) -> SourceIn:
        if (self.folder is None) == (self.s3 is None):
            raise ValueError("give exactly one of folder and s3")
        return self


def source_spec(spec: dict[str, Any]) -> SourceIn:
    """`spec` checked as the API checks a body (InvalidInputError naming the field)."""
    return checked_body(SourceIn, spec, "source")


@dataclass(frozen=True)
class Allowed:
    """What a server may read on a client's behalf (QUARRY_SYNC_ROOTS, QUARRY_SYNC_BUCKETS):
    a client key must not make it index any folder of its disk or any bucket its own
    credentials reach, nor send requests to an endpoint of the client's choosing."""

    roots: list[Path]
    buckets: list[str]  # s3://BUCKET/PREFIX/ prefixes

    def check(self, location: str, endpoint: str) -> None:
        if location.startswith("s3://"):
            address = location.rstrip("/") + "/"
            if endpoint:
                raise InvalidInputError(
                    "endpoint: a server's sources use its own S3 endpoint (AWS_ENDPOINT_URL)",
                    detail={"field": "endpoint"},
                )
            if not any(address.startswith(b) for b in self.buckets):
                said = ", ".join(self.buckets) or "none"
                raise InvalidInputError(
                    f"s3: {location} is not under the buckets this server may read "
                    f"(QUARRY_SYNC_BUCKETS: {said})",
                    detail={"field": "s3"},
                )
            return
        path = Path(location).expanduser().resolve()
        if not any(path == r or r in path.parents for r in self.roots):
            said = ", ".join(map(str, self.roots)) or "none"
            raise InvalidInputError(
                f"folder: {path} is not under the folders this server may read "
                f"(QUARRY_SYNC_ROOTS: {said})",
                detail={"field": "folder"},
            )


def new_source(body: SourceIn, collection: str, allowed: Allowed | None) -> Source:
    """The source `body` asks for, within what `allowed` says a server may read (None:
    anything, for a source run by its own user, not by a server on a client's behalf)."""
    location = body.s3 or str(Path(body.folder or "").expanduser().resolve())
    if allowed is not None:
        allowed.check(location, body.endpoint)
    return Source(
        name=body.name,
        location=location,
        collection=body.collection or collection,
        endpoint=body.endpoint,
        every_s=parse_every(body.every),
        max_delete=body.max_delete,
        metadata=body.metadata,
    )


def run_source(
    quarry: SyncTarget,
    registry: SourceRegistry,
    name: str,
    stamps_dir: Path,
    allowed: Allowed | None = None,
) -> Source:
    """One sync run of source `name`, its outcome recorded; returns the source after it.
    One run of a source at a time, across processes sharing the data dir (a file lock):
    a run asked for while another goes on waits for it."""
    with FileLock(str(registry.folder / f"{name}.run.lock")):
        return _run(quarry, registry, name, stamps_dir, allowed)


def _run(
    quarry: SyncTarget,
    registry: SourceRegistry,
    name: str,
    stamps_dir: Path,
    allowed: Allowed | None,
) -> Source:
    before = registry.get(name)
    source = registry.update(name, running=True, last_started=time.time(), runs=before.runs + 1)
    report: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    try:
        if allowed is not None:  # what the server may read now (its settings may have changed)
            allowed.check(source.location, source.endpoint)
        done = sync_source(
            quarry,
            open_source(source.location, source.endpoint or None),
            collection=source.collection,
            metadata=source.metadata,
            observer=SilentObserver(),
            stamps_dir=stamps_dir,
            max_delete_share=source.max_delete,
            progress=lambda stage, now: _progress(registry, name, stage, now),
        )
        report = done.to_dict()
        if done.refused:
            error = {"code": "deletion_refused", "message": done.refused}
    except QuarryError as exc:
        error = {"code": exc.code, "message": exc.message}
    except Exception as exc:  # a bug: said on the source, not lost in a thread
        error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
    return registry.update(
        name,
        running=False,
        progress=None,
        last_finished=time.time(),
        last_report=report,
        last_error=error,
    )


def _progress(registry: SourceRegistry, name: str, stage: str, now: SyncReport) -> None:
    """A run's stage and counts so far, on its source (what the Sources page shows)."""
    registry.update(name, progress={"stage": stage, "at": time.time(), **now.to_dict()})


class SourceRunner:
    """The server's schedule: every few seconds, each source whose period has passed since
    its last run is synced, on its own thread (`sync_now` starts one at once). One run of a
    source at a time; a run left `running` by a server that died is run again."""

    def __init__(
        self,
        registry: SourceRegistry,
        target: SyncTarget,
        stamps_dir: Path,
        allowed: Allowed | None = None,
        tick_s: float = 5,
    ) -> None:
        self.registry = registry
        self.target = target
        self.stamps_dir = stamps_dir
        self.allowed = allowed
        self.tick_s = tick_s
        self._running: set[str] = set()
        self._again: set[str] = set()  # asked for while a run went on: one more after it
        self._lock = threading.Lock()

    def sync_now(self, name: str) -> tuple[Source, int]:
        """Start a run of `name` (or, while one goes on, one more after it); returns the
        source as it stands and the number its `runs` reaches once that run has started."""
        source = self.registry.get(name)
        with self._lock:
            if name in self._running:
                self._again.add(name)
                return source, source.runs + 1  # the next run to start (at most this one's)
            self._running.add(name)
        # A daemon: a server stopping does not wait on a run (the next one converges).
        threading.Thread(target=self._run, args=(name,), name=f"source-{name}", daemon=True).start()
        return source, source.runs + 1

    def _run(self, name: str) -> None:
        try:
            while True:
                run_source(self.target, self.registry, name, self.stamps_dir, self.allowed)
                with self._lock:
                    if name not in self._again:
                        return
                    self._again.discard(name)
        except NotFoundError:  # removed while it waited
            pass
        finally:
            with self._lock:
                self._running.discard(name)

    def due(self, now: float) -> list[str]:
        names = []
        for source in self.registry.list():
            if source.running and source.name not in self._running:
                source.running = False  # its run died with an earlier server
            if source.due(now) and source.name not in self._running:
                names.append(source.name)
        return names

    def tick(self) -> None:
        for name in self.due(time.time()):
            self.sync_now(name)
