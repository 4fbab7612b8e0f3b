"""A small HTTP client for Quarry's API; every failure becomes an `ApiError` with a message."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any, NoReturn

import httpx

from client.config import ClientSettings


class ApiError(Exception):
    """What the API (or the network) said went wrong, readable as is."""

    def __init__(self, code: str, message: str, status: int = 0, detail: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.detail = detail


class ApiClient:
    def __init__(self, settings: ClientSettings) -> None:
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.base_url = settings.api_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=settings.api_timeout_s
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ApiError(
                "timeout", f"the Quarry API at {self.base_url} did not answer in time"
            ) from exc
        except httpx.HTTPError as exc:
            raise ApiError(
                "unreachable", f"cannot reach the Quarry API at {self.base_url} ({exc})"
            ) from exc
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                return None
        self._raise(response)

    @staticmethod
    def _raise(response: httpx.Response) -> NoReturn:
        """The API's error answer as an `ApiError`."""
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            raise ApiError(
                str(error.get("code", "error")),
                str(error.get("message", response.reason_phrase)),
                response.status_code,
                error.get("detail"),
            )
        raise ApiError(
            "http_error",
            f"HTTP {response.status_code} {response.reason_phrase}",
            response.status_code,
        )

    # -- documents and jobs ------------------------------------------------------------
    def upload(
        self,
        files: Sequence[tuple[str, bytes | IO[bytes]]],
        metadata: dict[str, Any] | None = None,
        *,
        collection: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        data: dict[str, str] = {"metadata": json.dumps(metadata)} if metadata else {}
        if collection:
            data["collection"] = collection
        if force:
            data["force"] = "true"
        parts = [("files", (name, content, "application/octet-stream")) for name, content in files]
        result: dict[str, Any] = self._call("POST", "/v1/documents", files=parts, data=data)
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}")
        return result

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/v1/jobs/{job_id}")
        return result

    def retry_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/jobs/{job_id}/retry")
        return result

    def jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/jobs", params={"limit": limit})["jobs"])

    def documents(
        self,
        source: str | None = None,
        limit: int = 1000,
        *,
        offset: int = 0,
        collection: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if source:
            params["source"] = source
        if collection:
            params["collection"] = collection
        result: dict[str, Any] = self._call("GET", "/v1/documents", params=params)
        return result

    def document(self, doc_id: str, include_chunks: bool = False) -> dict[str, Any]:
        params = {"include_chunks": "true"} if include_chunks else {}
        result: dict[str, Any] = self._call("GET", f"/v1/documents/{doc_id}", params=params)
        return result

    def delete(self, doc_id: str, collection: str | None = None) -> dict[str, Any]:
        params = {"collection": collection} if collection else {}
        result: dict[str, Any] = self._call("DELETE", f"/v1/documents/{doc_id}", params=params)
        return result

    def reingest(self, doc_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/documents/{doc_id}/reingest")
        return result

    # -- search ------------------------------------------------------------------------
    def search(
        self,
        query: str,
        top_k: int = 10,
        filters: dict[str, Any] | None = None,
        instruction: str | None = None,
        *,
        collection: str | None = None,
        score_threshold: float | None = None,
        mode: str | None = None,
        rerank: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query, "top_k": top_k, "filters": filters or {}}
        if mode:
            body["mode"] = mode
        if rerank:
            body["rerank"] = True
        if instruction:
            body["instruction"] = instruction
        if collection:
            body["collection"] = collection
        if score_threshold is not None:
            body["score_threshold"] = score_threshold
        result: dict[str, Any] = self._call("POST", "/v1/search", json=body)
        return result

    def instructions(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/instructions")
        return result

    # -- status ------------------------------------------------------------------------
    def readiness(self) -> dict[str, Any]:
        """The readiness report, also when it says 503 (that is an answer, not an error)."""
        try:
            response = self._http.get("/readyz")
            result: dict[str, Any] = response.json()
            return result
        except (httpx.HTTPError, ValueError) as exc:
            raise ApiError(
                "unreachable", f"cannot reach the Quarry API at {self.base_url} ({exc})"
            ) from exc

    def collections(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/collections")
        return result

    def backfill_sparse(self, collection: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/collections/{collection}/sparse")
        return result

    def migrate(self, collection: str, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/v1/collections/{collection}/migrate", json=spec
        )
        return result

    def migration(self, collection: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/collections/{collection}/migration")
        return result

    def cancel_migration(self, collection: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/v1/collections/{collection}/migration")
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/stats")
        return result

    def sources(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/sources")
        return result

    def source(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/sources/{name}")
        return result

    def add_source(self, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/sources", json=spec)
        return result

    def remove_source(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/v1/sources/{name}")
        return result

    def sync_source(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/sources/{name}/sync")
        return result

    def create_key(self, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/keys", json=spec)
        return result

    def keys(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/keys")
        return result

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/v1/keys/{key_id}")
        return result

    def audit(self, limit: int = 100, key_id: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit} | ({"key_id": key_id} if key_id else {})
        result: dict[str, Any] = self._call("GET", "/v1/audit", params=params)
        return result

    def backup(self, into: IO[bytes]) -> None:
        """The server's backup of its data dir, as a tar stream written to `into`."""
        try:
            with self._http.stream("GET", "/v1/backup", timeout=None) as response:
                if not response.is_success:
                    response.read()
                    self._raise(response)
                for block in response.iter_bytes(1 << 20):
                    into.write(block)
        except httpx.HTTPError as exc:
            raise ApiError(
                "unreachable", f"cannot reach the Quarry API at {self.base_url} ({exc})"
            ) from exc
