"""A folder or a bucket kept in sync with a collection: `quarry sync SOURCE`.

A sync run lists the source completely (`app.sync_sources`), compares it with the documents
that earlier runs of the same source put in the collection (each carries `synced_from` = the
folder's absolute path or the `s3://` address in its metadata), ingests the files that are
new or changed, and removes the documents whose files are gone. The collection itself is
the state: a document's id is the hash of its name and bytes, so a file whose id is stored,
complete and alone under its name is unchanged and is neither sent nor parsed; a second
run with nothing changed does no parsing and no model work, and a run killed at any point
converges on the next one (it ingests first and deletes after). A renamed file is a new
name (its chunks' embeddings come from the cache) and a gone one.

Bytes are read (an object downloaded) only for a file whose stamp (size and modification
time, or ETag and size) is not the one a run last saw with the very document now stored
under its name: the stamps are a cache beside the data (`sync/` in the data dir), never the
truth; without it each file is read once more and compared by content hash.

Names are the relative paths, NFC-normalised as uploads store them. A document of the same
name that came from elsewhere is adopted when it carries no source (an earlier `quarry
ingest` of the folder, say) and is a conflict, left alone, when another source's sync put
it there. Deletion is guarded: nothing is deleted unless the whole source could be listed,
and a run that would delete more than `max_delete_share` of the source's documents (an
unmounted folder, a bucket listed empty by mistake) deletes nothing and says so, unless
forced.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.sync_sources import Entry, SyncSource
from embedding.errors import InvalidInputError
from ingest.failpoints import failpoint
from ingest.models import FileError, IngestReport
from ingest.pipeline import IngestObserver
from ingest.sources import document_id

SYNCED_FROM = "synced_from"  # the metadata key naming a document's folder or bucket


class SyncTarget(Protocol):
    """What a sync run writes through (every `Quarry`, and the server's own upload path)."""

    def documents(self, collection: str) -> list[dict[str, Any]]: ...

    def delete_document(self, collection: str, doc_id: str) -> int: ...

    def ingest(
        self,
        files: Sequence[tuple[Path, str]],
        *,
        collection: str,
        metadata: dict[str, Any],
        force: bool,
        observer: IngestObserver,
    ) -> IngestReport: ...


@dataclass
class SyncReport:
    source: str
    collection: str
    listed: int = 0
    unchanged: int = 0
    fetched: int = 0  # files read (objects downloaded) to compare their bytes
    to_ingest: int = 0  # new or changed files sent to ingestion
    ingest: IngestReport = field(default_factory=IngestReport)
    deleted: list[str] = field(default_factory=list)  # the names removed
    refused: str | None = None  # why the deletions were not made

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "collection": self.collection,
            "listed": self.listed,
            "unchanged": self.unchanged,
            "fetched": self.fetched,
            "to_ingest": self.to_ingest,
            "ingest": self.ingest.to_dict(),
            "deleted": self.deleted,
            "refused": self.refused,
        }


class Stamps:
    """What a run saw last of each file: its stamp and the document id of its bytes."""

    def __init__(self, folder: Path | None, root: str, collection: str) -> None:
        digest = hashlib.sha256(f"{collection}\0{root}".encode()).hexdigest()[:24]
        self.path = folder / f"{digest}.json" if folder is not None else None
        self.seen: dict[str, list[str]] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.seen = json.loads(self.path.read_text(encoding="utf-8"))["files"]
            except (OSError, ValueError, KeyError, TypeError):
                self.seen = {}  # a cache: rebuilt by reading the files once more

    def doc_id(self, entry: Entry) -> str | None:
        """The document id of the entry's bytes when its stamp is the one seen last."""
        seen = self.seen.get(entry.key)
        return seen[1] if seen and seen[0] == entry.stamp else None

    def save(self, root: str, current: dict[str, list[str]]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = self.path.parent / f".{self.path.name}.{os.getpid()}.{threading.get_ident()}"
        fresh.write_text(json.dumps({"source": root, "files": current}), encoding="utf-8")
        os.replace(fresh, self.path)


def sync_source(
    quarry: SyncTarget,
    source: SyncSource,
    *,
    collection: str,
    metadata: dict[str, Any],
    observer: IngestObserver,
    stamps_dir: Path | None = None,
    max_delete_share: float = 0.5,
    force_delete: bool = False,
    progress: Callable[[str, SyncReport], None] | None = None,
) -> SyncReport:
    """Make `collection`'s documents from `source` match its files; `progress` hears each
    stage (listing, comparing, ingesting, deleting) with the counts so far.

    Raises:
        InvalidInputError: the source cannot be listed whole (nothing is changed).
    """
    root = source.root
    report = SyncReport(root, collection)
    tell = progress or (lambda stage, report: None)
    tell("listing", report)
    try:
        entries = source.entries()
    except OSError as exc:
        raise InvalidInputError(
            f"{root}: cannot be listed whole ({exc}); nothing was synced or deleted",
            detail={"source": root},
        ) from exc
    report.listed = len(entries)
    tell("comparing", report)
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in quarry.documents(collection):
        by_name[doc["source"]].append(doc)
    ours = {
        name: docs
        for name, docs in by_name.items()
        if any((d.get("metadata") or {}).get(SYNCED_FROM) == root for d in docs)
    }
    stamps = Stamps(stamps_dir, root, collection)
    current: dict[str, list[str]] = {}
    send, adopt, errors = [], [], []
    with tempfile.TemporaryDirectory(prefix="quarry-sync-") as scratch:
        for entry in entries:
            key = entry.key
            docs = by_name.get(key, [])
            owners = {(d.get("metadata") or {}).get(SYNCED_FROM) for d in docs}
            if owners - {root, None}:
                message = f"{key}: a document of this name was synced from another source"
                errors.append(FileError(key, "name_conflict", message))
                continue
            stored = [(d["doc_id"], d["complete"]) for d in docs]
            known = stamps.doc_id(entry)
            if known is not None and key in ours and stored == [(known, True)]:
                report.unchanged += 1  # the same stamp, the same document: not read
                current[key] = [entry.stamp, known]
                continue
            try:
                path = source.fetch(key, Path(scratch))
                doc_id = document_id(key, path.read_bytes())
            except OSError as exc:
                errors.append(FileError(key, "unreadable", f"{key}: cannot be read ({exc})"))
                continue
            report.fetched += 1
            current[key] = [entry.stamp, doc_id]
            if stored == [(doc_id, True)]:
                if key in ours:
                    report.unchanged += 1
                else:
                    adopt.append((path, key))  # stored already, but not yet as this source's
            else:
                send.append((path, key))
        tagged = {**metadata, SYNCED_FROM: root}
        report.to_ingest = len(send) + len(adopt)
        tell("ingesting", report)
        for batch, force in ((send, False), (adopt, True)):  # adopted: the same bytes again,
            if batch:  # to take the source's tag (their embeddings come from the cache)
                done = quarry.ingest(
                    batch, collection=collection, metadata=tagged, force=force, observer=observer
                )
                report.ingest.add(done)
    report.ingest.errors = errors + report.ingest.errors
    report.ingest.files += len(errors)
    failed = {e.file for e in report.ingest.errors + report.ingest.retrying}
    stamps.save(root, {k: v for k, v in current.items() if k not in failed})
    listed = {entry.key for entry in entries}
    gone = {name: docs for name, docs in ours.items() if name not in listed}
    if gone and not force_delete and len(gone) > max_delete_share * len(ours):
        report.refused = (
            f"{root}: {len(gone)} of its {len(ours)} documents in {collection!r} are gone "
            f"from the source, more than {max_delete_share:.0%}; nothing was deleted (is the "
            "folder mounted, the bucket prefix right?). Run again with --force-delete to "
            "remove them"
        )
        return report
    failpoint("sync_before_delete")
    tell("deleting", report)
    for name, docs in sorted(gone.items()):
        for doc in docs:  # every version of the name that is this source's, or no one's
            if (doc.get("metadata") or {}).get(SYNCED_FROM) in (root, None):
                quarry.delete_document(collection, doc["doc_id"])
        report.deleted.append(name)
        failpoint("sync_between_deletes")
    return report
