"""Route dependencies: the process state, and the bearer-key check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.state import QuarryState

_bearer = HTTPBearer(auto_error=False, description="one of QUARRY_API_KEYS, when keys are set")


def get_state(request: Request) -> QuarryState:
    state: QuarryState = request.app.state.quarry
    return state


State = Annotated[QuarryState, Depends(get_state)]


def bearer_scheme(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Declares the bearer scheme in the OpenAPI document; `ApiKeyGuard` checks the key
    (before any body is read, which a dependency cannot do)."""
