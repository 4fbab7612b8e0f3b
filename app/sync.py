"""A folder kept in sync with a collection: `quarry sync FOLDER`.

A sync run lists the folder completely, compares it with the documents that earlier runs
of the same folder put in the collection (each carries `synced_from` = the folder's
absolute path in its metadata), ingests the files that are new or changed, and removes the
documents whose files are gone. The collection itself is the state: a document's id is the
hash of its name and bytes, so a file whose id is already stored under its name is
unchanged and is neither uploaded nor parsed; a second run with nothing changed does no
parsing and no model work, and a run killed at any point converges on the next one. A
renamed file is a new name (its chunks' embeddings come from the cache) and a gone one.

Deletion is guarded: nothing is deleted unless the listing was complete, and a run that
would delete more than `max_delete_share` of the folder's documents (an unmounted folder,
a wrong path) stops and says so, unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.service import Quarry
from embedding.errors import InvalidInputError
from ingest.models import IngestReport
from ingest.pipeline import IngestObserver
from ingest.sources import document_id, expand_paths

SYNCED_FROM = "synced_from"  # the metadata key naming a document's folder


class DeletionRefused(InvalidInputError):
    """A sync would delete more of a folder's documents than allowed."""

    code = "deletion_refused"
    status = 409


@dataclass
class SyncReport:
    folder: str
    collection: str
    listed: int = 0
    unchanged: int = 0
    ingest: IngestReport = field(default_factory=IngestReport)
    deleted: list[str] = field(default_factory=list)  # the sources removed

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "collection": self.collection,
            "listed": self.listed,
            "unchanged": self.unchanged,
            "ingest": self.ingest.to_dict(),
            "deleted": self.deleted,
        }


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
        InvalidInputError: `folder` is not a readable folder (nothing is changed).
        DeletionRefused: too many documents would go (nothing is deleted; new and changed
            files are ingested all the same).
    """
    if not folder.is_dir():
        raise InvalidInputError(
            f"{folder}: not a folder (nothing was synced or deleted)",
            detail={"folder": str(folder)},
        )
    root = str(folder.resolve())
    report = SyncReport(root, collection)
    files, _ = expand_paths([str(folder)])  # complete, or an OSError: nothing is deleted
    report.listed = len(files)
    stored = {
        doc["source"]: doc["doc_id"]
        for doc in quarry.documents(collection)
        if (doc.get("metadata") or {}).get(SYNCED_FROM) == root
    }
    changed = []
    for path, key in files:
        if stored.get(key) == document_id(key, path.read_bytes()):
            report.unchanged += 1
        else:
            changed.append((path, key))
    listed = {key for _, key in files}
    gone = {source: doc for source, doc in stored.items() if source not in listed}
    if changed:
        report.ingest = quarry.ingest(
            changed,
            collection=collection,
            metadata={**metadata, SYNCED_FROM: root},
            force=False,
            observer=observer,
        )
    if gone and not force_delete and len(gone) > max_delete_share * len(stored):
        raise DeletionRefused(
            f"{root}: {len(gone)} of its {len(stored)} documents in {collection!r} are gone "
            f"from the folder, more than {max_delete_share:.0%}; nothing was deleted (is the "
            "folder mounted?). Run again with --force-delete to remove them",
            detail={
                "folder": root,
                "gone": sorted(gone),
                "documents": len(stored),
                "ingested": report.ingest.ingested,
            },
        )
    for source, doc_id in sorted(gone.items()):
        quarry.delete_document(collection, doc_id)
        report.deleted.append(source)
    return report
