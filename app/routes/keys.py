"""API keys and the audit log, for admins (`app.keys`, `app.audit`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from app.audit import AuditLog
from app.deps import State
from app.key_spec import KeyIn, create_key
from app.keys import KeyStore
from app.schemas import COMMON_ERRORS, error_responses

router = APIRouter(prefix="/v1", tags=["keys"], responses=COMMON_ERRORS)
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$", description="a key's id")]


def _store(state: State) -> KeyStore:
    store = state.access.store
    if store is None:
        raise RuntimeError("this server keeps no keys")
    return store


def _audit(state: State) -> AuditLog:
    audit = state.access.audit
    if audit is None:
        raise RuntimeError("this server keeps no audit log")
    return audit


@router.post("/keys", status_code=201)
async def new_key(state: State, body: KeyIn) -> dict[str, Any]:
    """A new key: `key` is shown this once (only its hash is kept)."""
    return await run_in_threadpool(create_key, _store(state), body, state.settings)


@router.get("/keys")
async def list_keys(state: State) -> dict[str, Any]:
    """Every stored key (never the key itself); those of QUARRY_API_KEYS are not listed."""
    found = await run_in_threadpool(_store(state).list)
    return {"keys": [p.to_public() for p in found]}


@router.delete("/keys/{key_id}", responses=error_responses(404))
async def revoke_key(state: State, key_id: KeyId) -> dict[str, Any]:
    """Revoke a key: every replica refuses it from its next request."""
    revoked = await run_in_threadpool(_store(state).revoke, key_id)
    return {"revoked": revoked.to_public()}


@router.get("/audit")
async def audit_log(
    state: State,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    key_id: Annotated[str | None, Query(description="one key's actions")] = None,
    since: Annotated[float | None, Query(ge=0, le=1e11, description="unix time")] = None,
) -> dict[str, Any]:
    """Who did what, when, with what result: every write and admin action, newest first."""
    entries = await run_in_threadpool(
        lambda: _audit(state).read(limit=limit, key_id=key_id, since=since)
    )
    return {"entries": entries}
