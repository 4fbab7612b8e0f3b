"""The store as a worker process sees it when the embedded store has another owner.

The embedded qdrant-edge shard may be opened by one process only (the server that owns the
data dir), so a `quarry worker` on the same machine hands its finished, embedded batches to
the owner over HTTP (`/v1/internal/store/...`) and asks it the few things ingestion needs.
With a Qdrant server (`QUARRY_QDRANT_URL`) workers write to it directly instead.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from embedding.errors import QuarryError
from retrieval.errors import StoreUnavailableError
from retrieval.models import ChunkRecord, CollectionRecipe, DocumentInfo

UPSERT_SLICE = 128  # records per request: a request stays a few MB whatever the document


def encode_record(record: ChunkRecord) -> dict[str, Any]:
    vector = np.ascontiguousarray(record.vector, dtype=np.float32)
    sparse = record.sparse
    return {
        "id": record.id,
        "vector": base64.b64encode(vector.tobytes()).decode("ascii"),
        "payload": record.payload,
        "sparse": None if sparse is None else [list(sparse.indices), list(sparse.values)],
        "scheme": record.scheme,
        "vectors": record.vectors,
    }


class OwnerError(QuarryError):
    """An error the store's owner answered with (its code and status are kept)."""


class OwnerStore:
    """The ingestion side of `VectorStore`, served by the data dir's owning server."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=f"{self.url}/v1/internal/store", headers=headers, timeout=timeout_s
        )

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        """One request, retried for a few seconds while the owner cannot be reached.

        Raises:
            StoreUnavailableError: the owner stayed unreachable.
            OwnerError: the owner refused (its error's code, status and message).
        """
        delay, deadline = 0.2, time.monotonic() + 10
        while True:
            try:
                response = self._client.request(method, path, json=body)
                break
            except httpx.TransportError as exc:
                if time.monotonic() > deadline:
                    raise StoreUnavailableError(
                        f"the store's owner at {self.url} is unreachable ({exc})"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "store_unavailable", "message": response.text[:300]}
            raised = OwnerError(str(error.get("message")), detail=error.get("detail"))
            raised.code = str(error.get("code", "store_unavailable"))
            raised.status = response.status_code
            raise raised
        return response.json()

    def recipe(self, collection: str) -> CollectionRecipe | None:
        found = self._call("GET", f"/{collection}/recipe")["recipe"]
        return None if found is None else CollectionRecipe.from_dict(found)

    def ensure_collection(self, collection: str, recipe: CollectionRecipe) -> None:
        self._call("PUT", f"/{collection}/recipe", recipe.to_dict())

    def document(self, collection: str, doc_id: str) -> DocumentInfo | None:
        found = self._call("GET", f"/{collection}/documents/{doc_id}")["document"]
        if found is None:
            return None
        found.pop("complete", None)
        return DocumentInfo(**found)

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> None:
        for start in range(0, len(records), UPSERT_SLICE):
            part = records[start : start + UPSERT_SLICE]
            self._call("POST", f"/{collection}/points", [encode_record(r) for r in part])

    def prune_source(
        self, collection: str, source: str, keep_doc_id: str, keep_chunks: int, seq: int = 0
    ) -> int:
        body = {
            "source": source,
            "keep_doc_id": keep_doc_id,
            "keep_chunks": keep_chunks,
            "seq": seq,
        }
        return int(self._call("POST", f"/{collection}/prune", body)["removed"])

    def newer_version(self, collection: str, source: str, doc_id: str, seq: int) -> bool:
        body = {"source": source, "doc_id": doc_id, "seq": seq}
        return bool(self._call("POST", f"/{collection}/newer", body)["newer"])

    def stamp_version(self, collection: str, doc_id: str, seq: int) -> None:
        self._call("POST", f"/{collection}/stamp", {"doc_id": doc_id, "seq": seq})

    def delete_document(self, collection: str, doc_id: str) -> int:
        return int(self._call("DELETE", f"/{collection}/documents/{doc_id}")["removed"])

    def optimize(self, collection: str) -> None:
        self._call("POST", f"/{collection}/optimize")

    def close(self) -> None:
        self._client.close()
