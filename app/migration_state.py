"""What a migration was asked to do and how far it got: one JSON file per collection in
`QUARRY_DATA_DIR/migrations/`, replaced atomically at each step."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from embedding.errors import QuarryError


class MigrationBusyError(QuarryError):
    """The collection is being moved to another model: one change of its layout at a time."""

    code = "migration_in_progress"
    status = 409


def refuse_while_migrating(data_dir: Path, collection: str, what: str) -> None:
    """Raise MigrationBusyError when a migration of `collection` is under way."""
    state = MigrationStates(data_dir / "migrations").get(collection)
    if state is not None and state.active:
        raise MigrationBusyError(
            f"collection {collection!r} is being moved to {state.model!r} ({state.stage}): "
            f"{what} once it is done",
            detail={"collection": collection},
        )


# building -> swapped -> done -> closed (the old collection dropped after its window); a
# rollback is a run the other way; cancelled before a swap
STAGES = ("building", "swapped", "done", "cancelled", "closed")
ACTIVE = ("building", "swapped")


@dataclass
class MigrationState:
    collection: str
    model: str  # as asked: a hub id or a model folder
    dimension: int | None = None
    rollback: bool = False  # this run moves the collection back to its kept version
    stage: str = "building"
    total: int = 0  # documents in the live collection at the last pass
    done: int = 0  # of them, held by the new one
    to: dict[str, Any] = field(default_factory=dict)  # the new collection's recipe
    swap_from: str = ""  # when the last pass began (ISO time): the post-swap catch-up's start
    error: str = ""
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    finished_at: str = ""
    rate_from: tuple[float, int] = (0.0, 0)  # (time, done) when this process took it up

    @property
    def active(self) -> bool:
        return self.stage in ACTIVE

    def eta_s(self) -> float | None:
        """Seconds left at the pace this process has kept (None: not known yet)."""
        since, done_then = self.rate_from
        moved = self.done - done_then
        if not self.active or moved <= 0 or not since:
            return None
        pace = (time.time() - since) / moved
        return round(pace * max(self.total - self.done, 0), 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("rate_from")
        data["eta_s"] = self.eta_s()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MigrationState:
        known = {f.name for f in fields(cls)} - {"rate_from"}
        return cls(**{k: v for k, v in data.items() if k in known})


class MigrationStates:
    """The state files; a process that takes a migration up is its only writer."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, collection: str) -> Path:
        return self.root / f"{collection}.json"

    def get(self, collection: str) -> MigrationState | None:
        try:
            text = self._file(collection).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return MigrationState.from_dict(json.loads(text))

    def save(self, state: MigrationState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        file = self._file(state.collection)
        staged = file.with_suffix(".tmp")
        staged.write_text(json.dumps(state.to_dict()), encoding="utf-8")
        os.replace(staged, file)

    def all(self) -> list[MigrationState]:
        if not self.root.exists():
            return []
        found = (self.get(f.stem) for f in sorted(self.root.glob("*.json")))
        return [s for s in found if s is not None]

    def remove(self, collection: str) -> None:
        self._file(collection).unlink(missing_ok=True)
