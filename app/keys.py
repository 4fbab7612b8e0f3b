"""API keys: who a bearer token is, what it may do, and how fast.

A key has a scope (`read` < `write` < `admin`: each includes the ones below), optionally
named collections it is limited to, and limits (requests per second with a burst, upload
bytes per hour; 0 = none). Keys made with `quarry keys create` live in Redis, stored by
their SHA-256 only (a key is 256 random bits: a fast hash is enough, and the key itself is
shown once, at creation); every API replica sharing the Redis sees a new or revoked key at
its next request. The keys of `QUARRY_API_KEYS` are admin keys without limits, checked
without Redis.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from app.settings import Settings
from embedding.errors import InvalidInputError, QuarryError
from ingest.job_queue import queue_name
from retrieval.errors import NotFoundError

SCOPES = ("read", "write", "admin")
# Redis keys, under the deployment's namespace (`namespace`): "<ns>:key:<sha256>" -> the
# key's record (a hash); "<ns>:key-ids": id -> sha256, for list and revoke.
_TOKEN_PREFIX = "qk_"


class KeyStoreUnavailable(QuarryError):
    code = "key_store_unavailable"
    status = 503


@dataclass(frozen=True)
class Limits:
    rps: float = 0.0  # requests per second; 0 = no limit
    burst: int = 0  # requests at once above the rate (at least 1 when rps is set)
    upload_mb_per_hour: float = 0.0  # 0 = no limit

    def __post_init__(self) -> None:
        for name in ("rps", "burst", "upload_mb_per_hour"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name}: must be 0 (no limit) or more")


@dataclass(frozen=True)
class Principal:
    """Who is asking: a key's id and name, its scope, collections and limits."""

    id: str
    name: str
    scope: str
    collections: tuple[str, ...] = ()  # empty: every collection
    limits: Limits = field(default_factory=Limits)
    created_at: float = 0.0

    def may(self, needed: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(needed)

    def sees(self, collection: str) -> bool:
        return not self.collections or collection in self.collections

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "collections": list(self.collections),
            "limits": asdict(self.limits),
            "created_at": self.created_at,
        }


OPEN = Principal(id="open", name="open server (no keys configured)", scope="admin")


def namespace(settings: Settings) -> str:
    """Where a deployment's keys, limits and audit log live in Redis: beside its queue
    (every replica shares it; deployments sharing one Redis never see each other's keys)."""
    return queue_name(settings.queue_name, settings.data_dir)


def key_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def env_principals(tokens: Iterable[str]) -> dict[str, Principal]:
    """The keys of QUARRY_API_KEYS, by digest: admin keys without limits, named `env-N` (not
    by their hash: an env key may be a weak one, and ids are shown in logs)."""
    digests = sorted({digest(t) for t in tokens})
    return {
        d: Principal(id=f"env-{i}", name="QUARRY_API_KEYS", scope="admin")
        for i, d in enumerate(digests, 1)
    }


def keys_marker(settings: Settings) -> Path:
    """Written when the first key is made and never removed: the server stays closed even
    with every stored key revoked, or its Redis flushed (QUARRY_API_KEYS then let you in)."""
    return settings.data_dir / "keys-required"


def _principal(raw: dict[bytes, bytes]) -> Principal:
    data = json.loads(raw[b"json"])
    return Principal(
        id=data["id"],
        name=data["name"],
        scope=data["scope"],
        collections=tuple(data["collections"]),
        limits=Limits(**data["limits"]),
        created_at=data["created_at"],
    )


def new_principal(
    name: str, scope: str, collections: Iterable[str], limits: Limits, token: str
) -> Principal:
    if scope not in SCOPES:
        raise InvalidInputError(f"scope: {scope!r} is not one of {', '.join(SCOPES)}")
    if not name.strip():
        raise InvalidInputError("name: must not be empty")
    if limits.rps and limits.burst < 1:
        limits = Limits(limits.rps, max(1, round(limits.rps)), limits.upload_mb_per_hour)
    return Principal(
        id=key_id(token),
        name=name.strip(),
        scope=scope,
        collections=tuple(sorted(set(collections))),
        limits=limits,
        created_at=time.time(),
    )


class KeyStore:
    """The stored keys, in Redis (the API and the CLI share it)."""

    def __init__(
        self, client: Callable[[], redis.Redis], namespace: str, marker: Path | None = None
    ) -> None:
        self._client = client
        self._redis: redis.Redis | None = None
        self._record = f"{namespace}:key:"
        self._ids = f"{namespace}:key-ids"
        self._required = f"{namespace}:keys-required"
        self.marker = marker

    @property
    def conn(self) -> redis.Redis:
        if self._redis is None:
            self._redis = self._client()
        return self._redis

    def _call(self, what: str, op: Callable[[redis.Redis], Any]) -> Any:
        try:
            return op(self.conn)
        except redis.RedisError as exc:
            raise KeyStoreUnavailable(
                f"the key store (Redis) is unreachable: cannot {what} ({exc})"
            ) from exc

    def create(
        self, name: str, scope: str, collections: Iterable[str], limits: Limits
    ) -> tuple[str, Principal]:
        """A new key: the token (shown once) and what it may do."""
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        principal = new_principal(name, scope, collections, limits, token)
        hashed = digest(token)

        def write(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.hset(self._record + hashed, "json", json.dumps(principal.to_public()))
            pipe.hset(self._ids, principal.id, hashed)
            pipe.set(self._required, 1)
            pipe.execute()

        self._call("create a key", write)
        if self.marker is not None:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.touch()
        return token, principal

    def find(self, token: str) -> Principal | None:
        raw = self._call("check a key", lambda r: r.hgetall(self._record + digest(token)))
        return _principal(raw) if raw else None

    def required(self) -> bool:
        """Whether a key was ever made here (revoking them all leaves the server closed)."""
        if self.marker is not None and self.marker.exists():
            return True
        return bool(self._call("check for keys", lambda r: r.exists(self._required, self._ids)))

    def list(self) -> list[Principal]:
        def read(r: redis.Redis) -> list[Principal]:
            digests: Any = r.hvals(self._ids)
            pipe = r.pipeline(transaction=False)
            for hashed in digests:
                pipe.hgetall(self._record.encode() + hashed)
            return [_principal(raw) for raw in pipe.execute() if raw]

        return sorted(self._call("list keys", read), key=lambda p: p.created_at)

    def revoke(self, ident: str) -> Principal:
        def remove(r: redis.Redis) -> Principal:
            hashed: Any = r.hget(self._ids, ident)
            if hashed is None:
                raise NotFoundError(f"no key {ident!r} (see `quarry keys list`)")
            raw: Any = r.hgetall(self._record.encode() + hashed)
            pipe = r.pipeline(transaction=True)
            pipe.delete(self._record.encode() + hashed)
            pipe.hdel(self._ids, ident)
            pipe.execute()
            return _principal(raw)

        result: Principal = self._call("revoke a key", remove)
        return result
