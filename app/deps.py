"""Route dependencies: the process state, and the bearer-key check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import UnauthorizedError
from app.state import QuarryState

_bearer = HTTPBearer(auto_error=False, description="one of QUARRY_API_KEYS, when keys are set")


def get_state(request: Request) -> QuarryState:
    state: QuarryState = request.app.state.quarry
    return state


State = Annotated[QuarryState, Depends(get_state)]


def require_key(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """With QUARRY_API_KEYS set, every /v1 route needs `Authorization: Bearer <key>`."""
    keys = state.settings.api_key_set
    if not keys:
        return
    if credentials is None:
        raise UnauthorizedError("missing API key: send 'Authorization: Bearer <key>'")
    given = credentials.credentials.encode()
    if not any(secrets.compare_digest(given, key.encode()) for key in keys):
        raise UnauthorizedError("invalid API key")
