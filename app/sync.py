"""A folder kept in sync with a collection: `quarry sync FOLDER`.

A sync run lists the folder completely, compares it with the documents that earlier runs
of the same folder put in the collection (each carries `synced_from` = the folder's
absolute path in its metadata), ingests the files that are new or changed, and removes the
documents whose files are gone. The collection itself is the state: a document's id is the
hash of its name and bytes, so a file whose id is stored, complete and alone under its name
is unchanged and is neither sent nor parsed; a second run with nothing changed does no
parsing and no model work, and a run killed at any point converges on the next one
(it ingests first and deletes after). A renamed file is a new name (its chunks' embeddings
come from the cache) and a gone one.

Names are the folder's relative paths, NFC-normalised as uploads store them. A document of
the same name that came from elsewhere is adopted when it carries no folder (an earlier
`quarry ingest` of the folder, say) and is a conflict, left alone, when another folder's
sync put it there. Deletion is guarded: nothing is deleted unless the whole folder could be
listed, and a run that would delete more than `max_delete_share` of the folder's documents
(an unmounted folder, a wrong path) deletes nothing and says so, unless forced.
"""

from __future__ import annotations

import os
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.service import Quarry
from embedding.errors import InvalidInputError
from ingest.models import FileError, IngestReport
from ingest.pipeline import IngestObserver
from ingest.sources import document_id

SYNCED_FROM = "synced_from"  # the metadata key naming a document's folder


@dataclass
class SyncReport:
    folder: str
    collection: str
    listed: int = 0
    unchanged: int = 0
    ingest: IngestReport = field(default_factory=IngestReport)
    deleted: list[str] = field(default_factory=list)  # the names removed
    refused: str | None = None  # why the deletions were not made

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "collection": self.collection,
            "listed": self.listed,
            "unchanged": self.unchanged,
            "ingest": self.ingest.to_dict(),
            "deleted": self.deleted,
            "refused": self.refused,
        }


def list_folder(folder: Path) -> list[tuple[Path, str]]:
    """Every file under `folder` (hidden ones skipped, as `quarry ingest` does) with its
    name; an unreadable subfolder raises (a partial listing must not look like deletions)."""

    def fail(exc: OSError) -> None:
        raise exc

    files = []
    for top, dirs, names in os.walk(folder, onerror=fail):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(n for n in names if not n.startswith(".")):
            path = Path(top) / name
            if path.is_file():
                key = path.relative_to(folder).as_posix()
                files.append((path, unicodedata.normalize("NFC", key)))
    return files


def sync_folder(
    quarry: Quarry,
    folder: Path,
    *,
    collection: str,
    metadata: dict[str, Any],
    observer: IngestObserver,
    max_delete_share: float = 0.5,
    force_delete: bool = False,
) -> SyncReport:
    """Make `collection`'s documents from `folder` match the folder's files.

    Raises:
        InvalidInputError: `folder` is not a folder, or cannot be listed whole (nothing is
            changed).
    """
    if not folder.is_dir():
        raise InvalidInputError(
            f"{folder}: not a folder (nothing was synced or deleted)",
            detail={"folder": str(folder)},
        )
    root = str(folder.resolve())
    report = SyncReport(root, collection)
    try:
        files = list_folder(folder.resolve())
    except OSError as exc:
        raise InvalidInputError(
            f"{root}: cannot be listed whole ({exc}); nothing was synced or deleted",
            detail={"folder": root},
        ) from exc
    report.listed = len(files)
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in quarry.documents(collection):
        by_name[doc["source"]].append(doc)
    ours = {
        name: docs
        for name, docs in by_name.items()
        if any((d.get("metadata") or {}).get(SYNCED_FROM) == root for d in docs)
    }
    send, adopt, errors = [], [], []
    for path, key in files:
        docs = by_name.get(key, [])
        owners = {(d.get("metadata") or {}).get(SYNCED_FROM) for d in docs}
        if owners - {root, None}:
            message = f"{key}: a document of this name was synced from another folder"
            errors.append(FileError(key, "name_conflict", message))
            continue
        try:
            doc_id = document_id(key, path.read_bytes())
        except OSError as exc:
            errors.append(FileError(key, "unreadable", f"{key}: cannot be read ({exc})"))
            continue
        if [(d["doc_id"], d["complete"]) for d in docs] == [(doc_id, True)]:
            if key in ours:
                report.unchanged += 1
            else:
                adopt.append((path, key))  # stored already, but not yet as this folder's
        else:
            send.append((path, key))
    tagged = {**metadata, SYNCED_FROM: root}
    for batch, force in ((send, False), (adopt, True)):  # adopted: the same bytes again,
        if batch:  # to take the folder's tag (their embeddings come from the cache)
            done = quarry.ingest(
                batch, collection=collection, metadata=tagged, force=force, observer=observer
            )
            report.ingest.add(done)
    report.ingest.errors = errors + report.ingest.errors
    report.ingest.files += len(errors)
    listed = {key for _, key in files}
    gone = {name: docs for name, docs in ours.items() if name not in listed}
    if gone and not force_delete and len(gone) > max_delete_share * len(ours):
        report.refused = (
            f"{root}: {len(gone)} of its {len(ours)} documents in {collection!r} are gone "
            f"from the folder, more than {max_delete_share:.0%}; nothing was deleted (is the "
            "folder mounted?). Run again with --force-delete to remove them"
        )
        return report
    for name, docs in sorted(gone.items()):
        for doc in docs:  # every version of the name that is this folder's, or no one's
            if (doc.get("metadata") or {}).get(SYNCED_FROM) in (root, None):
                quarry.delete_document(collection, doc["doc_id"])
        report.deleted.append(name)
    return report
