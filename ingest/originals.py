"""Uploaded files kept by document id, so that a document can be re-ingested later."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


class Originals:
    """`<root>/<doc id><ext>`: a document id names one source's version, so two sources with
    the same bytes keep two originals, and removing one never touches the other."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def keep(self, staged: Path, doc_id: str) -> bool:
        """Move a staged file here as the original of `doc_id`; False if it is gone."""
        if not staged.exists():
            return False
        target = self.root / f"{doc_id}{staged.suffix.lower()}"
        if target.exists():
            staged.unlink(missing_ok=True)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.move(staged, target)
        return True

    def find(self, doc_id: str) -> Path | None:
        if not self.root.exists() or not doc_id.isalnum():
            return None
        return next(iter(sorted(self.root.glob(f"{doc_id}.*"))), None)

    def remove(self, doc_id: str) -> None:
        found = self.find(doc_id)
        if found is not None:
            found.unlink(missing_ok=True)
