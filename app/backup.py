"""Backups that restore: `quarry backup DEST`, `quarry restore SRC`, `quarry backup --verify`.

A backup is a folder: each collection on a Qdrant server snapshotted through its API
(`app.backup_qdrant`), or each collection of the embedded store copied consistently (its
recipe and shard, taken with writes held off for the copy: `EdgeStore.snapshot`), then
tidied to one complete version per source (a copy taken between a new version's write
and the old one's removal holds both: the newest complete one is kept, as the pipeline
itself would have left it); the kept originals; the failure ledgers; the named sources and
their sync stamps; the source-version counter (new uploads after a restore stay newer than
everything restored). `manifest.json` lists every file with its size and SHA-256, written
last: a folder without it is not a backup. Job state and the embedding cache are not
kept (work in flight is not acknowledged data; the cache refills itself).

A restore verifies the backup first, refuses a data dir that holds data unless forced,
and refuses one a server owns; it copies into a staging folder beside the data and moves
each part into place, so a killed restore leaves no half-restored part behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from app.settings import Settings
from embedding.errors import InvalidInputError
from retrieval.edge_store import EdgeStore
from retrieval.errors import NotFoundError
from retrieval.file_copy import copy_with_holes
from retrieval.protocol import VectorStore

FORMAT = 1
MANIFEST = "manifest.json"
# The parts of a data dir a backup holds, by their folder or file name in it.
PARTS = ("originals", "failures", "sources", "sync", "source-versions")
STORE = "qdrant"
JOBS = "jobs"  # not kept: work in flight is not acknowledged data
MIGRATIONS = "migrations"  # not kept: a backup holds no collection built beside another


def take(store: VectorStore, settings: Settings, dest: Path) -> dict[str, Any]:
    """A backup of the data dir into the empty (or new) folder `dest`; returns its
    manifest."""
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInputError(
            f"dest: {dest} is not empty (a backup goes into a new folder)",
            detail={"field": "dest"},
        )
    dest.mkdir(parents=True, exist_ok=True)
    pruned: dict[str, int] = {}
    if isinstance(store, EdgeStore):
        collections = []
        for name in store.collections():
            try:
                store.snapshot(name, dest / STORE / name)
                collections.append(name)
            except NotFoundError:  # dropped while the backup ran
                continue
        copied = EdgeStore(dest / STORE)
        try:
            pruned = {name: tidy(copied, name) for name in collections}
        finally:
            copied.close()
    else:  # a Qdrant server: its snapshot API (tidied when restored)
        from app import backup_qdrant
        from retrieval.qdrant_store import QdrantServerStore

        assert isinstance(store, QdrantServerStore)
        collections = backup_qdrant.take(store, settings, dest / backup_qdrant.SERVER)
    for part in PARTS:
        source = settings.data_dir / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=shutil.ignore_patterns("*.lock", "*.tmp"))
        elif source.is_file():
            shutil.copy2(source, dest / part)
    manifest = {
        "format": FORMAT,
        "created_at": time.time(),
        "collections": collections,
        "superseded_chunks_dropped": pruned,
        "files": _checksums(dest),
    }
    _write_json(dest / MANIFEST, manifest)
    return manifest


def tidy(store: VectorStore, collection: str) -> int:
    """Leave one version of each source: the newest complete one (by its acknowledged
    version, `seq`); returns the chunks removed."""
    by_source: dict[str, list[Any]] = defaultdict(list)
    for doc in store.documents(collection):
        by_source[doc.source].append(doc)
    removed = 0
    for source, docs in by_source.items():
        complete = [d for d in docs if d.chunks >= d.expected_chunks]
        if len(docs) == 1 and complete:
            continue
        if not complete:
            continue  # nothing whole to keep: leave it for the pipeline to finish
        keep = max(complete, key=lambda d: (d.seq, d.ingested_at))
        removed += store.prune_source(collection, source, keep.doc_id, keep.expected_chunks)
    return removed


def verify(folder: Path) -> list[str]:
    """What is wrong with the backup in `folder` (nothing: it restores as taken)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{folder}: no readable {MANIFEST} ({exc}): not a complete backup"]
    if manifest.get("format") != FORMAT:
        return [f"{folder}: backup format {manifest.get('format')!r}, expected {FORMAT}"]
    problems = []
    found = _checksums(folder)
    for name, (size, digest) in manifest["files"].items():
        seen = found.get(name)
        if seen is None:
            problems.append(f"{name}: missing")
        elif seen != [size, digest]:
            problems.append(f"{name}: changed since the backup (size or SHA-256 differs)")
    problems += [
        f"{name}: not in the backup's manifest" for name in found.keys() - manifest["files"].keys()
    ]
    return problems


def restore(folder: Path, settings: Settings, force: bool = False) -> dict[str, Any]:
    """Restore the backup in `folder` into the data dir `settings` names.

    Raises:
        InvalidInputError: the backup does not verify, or the data dir holds data and
            `force` is not given.
    """
    problems = verify(folder)
    if problems:
        raise InvalidInputError(
            f"{folder}: the backup does not verify: {'; '.join(problems[:5])}",
            detail={"problems": problems},
        )
    data = settings.data_dir
    parts = (STORE, *PARTS, JOBS, MIGRATIONS)
    held = [p for p in parts if (data / p).exists() and _holds_data(data / p)]
    if held and not force:
        raise InvalidInputError(
            f"{data} holds data already ({', '.join(held)}); restore into an empty data dir, "
            "or pass --force to replace it",
            detail={"field": "data_dir", "holds": held},
        )
    server = None
    if (folder / "qdrant-server").is_dir():  # collections of a Qdrant server: restored there
        from app import backup_qdrant  # (qdrant-client loads slowly: only when needed)

        server = backup_qdrant.check_restorable(folder / backup_qdrant.SERVER, settings, force)
    data.mkdir(parents=True, exist_ok=True)
    for left in data.glob(".restoring-*"):  # a restore killed before it ended
        shutil.rmtree(left, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".restoring-", dir=data))
    for part in (STORE, *PARTS):
        if (folder / part).is_dir():
            shutil.copytree(folder / part, staging / part, copy_function=copy_with_holes)
        elif (folder / part).is_file():
            shutil.copy2(folder / part, staging / part)
    # The server's collections once the local parts are staged (what can fail here has)
    if server is not None:
        try:
            for name in backup_qdrant.restore(server, settings, folder / backup_qdrant.SERVER):
                tidy(server, name)  # a snapshot taken mid-replacement: the newest complete one
        finally:
            server.close()
    # The data dir becomes the backup's, part by part, each swapped whole: the old part is
    # moved aside first, then the new one in, then the old one removed. A part the backup
    # lacks goes too, and so does the old job state (its files would run into the restored
    # collections); the embedding cache stays (it is keyed by the model's recipe).
    retired = staging / ".old"
    retired.mkdir()
    for part in (STORE, *PARTS, JOBS, MIGRATIONS):
        target = data / part
        if target.exists():
            target.rename(retired / part)
        if (staging / part).exists():
            (staging / part).rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return {"restored": str(folder), "into": str(data), "collections": manifest["collections"]}


def _holds_data(path: Path) -> bool:
    return path.is_file() or any(path.iterdir())


def _checksums(folder: Path) -> dict[str, list[Any]]:
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path != folder / MANIFEST:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            found[path.relative_to(folder).as_posix()] = [path.stat().st_size, digest.hexdigest()]
    return found


def _write_json(path: Path, data: Any) -> None:
    fresh = path.with_suffix(".tmp")
    fresh.write_text(json.dumps(data, indent=1), encoding="utf-8")
    fresh.replace(path)
