"""Uploaded files kept by document id, so that a document can be re-ingested later."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ingest.sources import document_id

log = logging.getLogger(__name__)


class Originals:
    """`<root>/<doc id><ext>`: content-addressed, so the same bytes are kept once."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def keep(self, staged: Path) -> str | None:
        """Move a staged file here (its id is the hash of its bytes); None if it is gone."""
        try:
            doc_id = document_id(staged.read_bytes())
        except OSError:
            return None
        target = self.root / f"{doc_id}{staged.suffix.lower()}"
        if target.exists():
            staged.unlink(missing_ok=True)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.move(staged, target)
        return doc_id

    def find(self, doc_id: str) -> Path | None:
        if not self.root.exists() or not doc_id.isalnum():
            return None
        return next(iter(sorted(self.root.glob(f"{doc_id}.*"))), None)

    def remove(self, doc_id: str) -> None:
        found = self.find(doc_id)
        if found is not None:
            found.unlink(missing_ok=True)
