"""The audit log: every write and admin action (who, what, when, result), in a Redis
stream every API replica appends to, capped at `QUARRY_AUDIT_MAX` entries, oldest first out.
Also written to the log, so an outage of Redis loses no record of who did what."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from embedding.errors import QuarryError

log = logging.getLogger("quarry.audit")


@dataclass(frozen=True)
class AuditEntry:
    at: float  # unix time
    key_id: str  # "open": a server without keys; "": no valid key given
    key_name: str
    scope: str
    method: str
    path: str
    query: str
    status: int
    client: str
    reason: str = ""  # why it was refused (401, 403, 429)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditUnavailable(QuarryError):
    code = "audit_unavailable"
    status = 503


class AuditLog:
    def __init__(self, client: Callable[[], redis.Redis], namespace: str, max_entries: int) -> None:
        self._client = client
        self._stream = f"{namespace}:audit"
        self._redis: redis.Redis | None = None
        self.max_entries = max_entries

    @property
    def conn(self) -> redis.Redis:
        if self._redis is None:
            self._redis = self._client()
        return self._redis

    def record(self, entry: AuditEntry, *, stream: bool = True) -> None:
        """Log the entry, and (`stream`) keep it in Redis for `GET /v1/audit`."""
        line = json.dumps(entry.to_dict())
        log.info("%s", line)
        if not stream:
            return
        try:
            self.conn.xadd(self._stream, {"json": line}, maxlen=self.max_entries, approximate=True)
        except redis.RedisError as exc:
            log.warning("audit entry kept in the log only: Redis is unreachable (%s)", exc)

    def read(
        self, *, limit: int, key_id: str | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """The newest entries first, at most `limit`, optionally one key's or since a time."""
        low = f"{int(since * 1000)}-0" if since else "-"
        found: list[dict[str, Any]] = []
        cursor = "+"
        try:
            while len(found) < limit:
                batch: Any = self.conn.xrevrange(self._stream, max=cursor, min=low, count=500)
                for stream_id, fields in batch:
                    entry = json.loads(fields[b"json"])
                    if key_id is None or entry["key_id"] == key_id:
                        found.append(entry | {"id": stream_id.decode()})
                if len(batch) < 500:
                    break
                cursor = "(" + batch[-1][0].decode()
        except redis.RedisError as exc:
            raise AuditUnavailable(f"the audit log (Redis) is unreachable ({exc})") from exc
        return found[:limit]
