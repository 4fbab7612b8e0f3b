"""Backups of collections on a Qdrant server, through its snapshot API.

Each collection (by the alias Quarry uses) is snapshotted where the alias points
(`POST /collections/{physical}/snapshots`), the snapshot downloaded into the backup with its
SHA-256 checked against the one Qdrant reports, then deleted from the server. A restore
uploads each snapshot (`POST /collections/{physical}/snapshots/upload?priority=snapshot`),
which recreates the collection with its configuration, points and payloads (the recipe is
in its metadata), and points the alias at it again (aliases are not in snapshots).

On a cluster, a snapshot holds the shards of the node it is taken on: back up a cluster
with Qdrant's own per-node snapshots or its cloud backups; this covers a single server.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import models

from app.settings import Settings
from embedding.errors import InvalidInputError
from retrieval.errors import NotFoundError, StoreUnavailableError
from retrieval.qdrant_store import QdrantServerStore

SERVER = "qdrant-server"  # the backup's folder of snapshots
INDEX = "collections.json"  # alias -> its physical collection and snapshot file
TIMEOUT = httpx.Timeout(30.0, read=None)  # a snapshot of a big collection takes its time


def _client(settings: Settings) -> httpx.Client:
    headers = {"api-key": settings.qdrant_api_key} if settings.qdrant_api_key else {}
    return httpx.Client(base_url=str(settings.qdrant_url), headers=headers, timeout=TIMEOUT)


def take(store: QdrantServerStore, settings: Settings, dest: Path) -> list[str]:
    """Snapshot every collection into `dest`; returns the collections backed up."""
    dest.mkdir(parents=True, exist_ok=True)
    index: dict[str, dict[str, Any]] = {}
    with _client(settings) as http:
        for name in store.collections():
            physical = store.layout.target(name)
            if physical is None:
                continue  # dropped while the backup ran
            made = http.post(f"/collections/{physical}/snapshots", params={"wait": "true"})
            try:
                _ok(made, f"snapshot of {name!r}")
            except NotFoundError:
                continue  # dropped while the backup ran
            snapshot = made.json()["result"]
            file = dest / f"{name}.snapshot"
            digest = hashlib.sha256()
            path = f"/collections/{physical}/snapshots/{snapshot['name']}"
            try:
                with http.stream("GET", path) as got, file.open("wb") as out:
                    _ok(got, f"download of {name!r}'s snapshot")
                    for block in got.iter_bytes(1 << 20):
                        digest.update(block)
                        out.write(block)
            finally:
                _ok(http.delete(path), f"removal of {name!r}'s snapshot from the server")
            if snapshot.get("checksum") and snapshot["checksum"] != digest.hexdigest():
                raise StoreUnavailableError(f"{name!r}: its snapshot arrived damaged")
            index[name] = {"physical": physical, "file": file.name, "sha256": digest.hexdigest()}
    (dest / INDEX).write_text(json.dumps(index, indent=1), encoding="utf-8")
    return sorted(index)


def check_restorable(folder: Path, settings: Settings, force: bool) -> QdrantServerStore:
    """The server to restore `folder`'s snapshots into, once it is known that doing so
    overwrites nothing (or `force`).

    Raises:
        InvalidInputError: no server is configured, or it holds these collections.
    """
    if not settings.qdrant_url:
        raise InvalidInputError(
            "the backup holds collections of a Qdrant server: set QUARRY_QDRANT_URL to the "
            "server to restore them into",
            detail={"field": "qdrant_url"},
        )
    store = QdrantServerStore.connect(settings.qdrant_url, settings.qdrant_api_key)
    index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    names = set(store.layout.names())
    there = [
        name
        for name, entry in index.items()
        if store.recipe(name) is not None or entry["physical"] in names
    ]
    if there and not force:
        store.close()
        raise InvalidInputError(
            f"the Qdrant server holds {', '.join(there)} already; pass --force to replace them",
            detail={"field": "qdrant_url", "holds": there},
        )
    return store


def restore(store: QdrantServerStore, settings: Settings, folder: Path) -> list[str]:
    """Upload every snapshot in `folder` and point each alias at its collection."""
    index: dict[str, dict[str, Any]] = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    with _client(settings) as http:
        for name, entry in sorted(index.items()):
            physical = entry["physical"]
            with (folder / entry["file"]).open("rb") as snapshot:
                sent = http.post(
                    f"/collections/{physical}/snapshots/upload",
                    params={"priority": "snapshot", "checksum": entry["sha256"], "wait": "true"},
                    files={"snapshot": (entry["file"], snapshot, "application/octet-stream")},
                )
            _ok(sent, f"restore of {name!r}")
            if physical == name:
                continue  # a collection made before aliases: restored under its own name
            aliases = store.layout.aliases()
            # `name` points at the restored collection, and nothing else does (a migration's
            # side alias left pointing there would let a later migration drop it)
            stale = {a for a, target in aliases.items() if target == physical} | {name}
            moves: list[Any] = [
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=a))
                for a in sorted(stale & aliases.keys())
            ]
            moves.append(
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=physical, alias_name=name)
                )
            )
            store.client.update_collection_aliases(change_aliases_operations=moves)
            replaced = aliases.get(name)
            if replaced is not None and replaced != physical:  # (--force) the one it replaces
                store.client.delete_collection(replaced)
    return sorted(index)


def _ok(response: httpx.Response, what: str) -> None:
    if response.status_code == 404:
        raise NotFoundError(f"Qdrant: the {what} found nothing ({response.status_code})")
    if not response.is_success:
        response.read()
        raise StoreUnavailableError(
            f"Qdrant refused the {what} ({response.status_code}): {response.text[:300]}"
        )
