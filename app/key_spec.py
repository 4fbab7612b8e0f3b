"""What a new key asks for, checked the same way from the API and from `quarry keys`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from app.keys import KeyStore, Limits
from app.schemas import COLLECTION_PATTERN, checked_body
from app.settings import Settings


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="who or what uses it")
    scope: Literal["read", "write", "admin"]
    collections: list[Annotated[str, Field(pattern=COLLECTION_PATTERN)]] = Field(
        default_factory=list, description="the only collections it may use (empty: all)"
    )
    rps: float | None = Field(default=None, ge=0, description="requests a second (0: none)")
    burst: int | None = Field(default=None, ge=0, description="requests at once above the rate")
    upload_mb_per_hour: float | None = Field(
        default=None, ge=0, description="upload megabytes an hour (0: no limit)"
    )


def key_spec(spec: dict[str, Any]) -> KeyIn:
    """`spec` checked as the API checks a body (InvalidInputError naming the field)."""
    return checked_body(KeyIn, spec, "key")


def create_key(store: KeyStore, body: KeyIn, settings: Settings) -> dict[str, Any]:
    """Make the key (its limits as asked, else the server's defaults for new keys): `key`
    is the token, shown this once."""
    s = settings
    limits = Limits(
        rps=s.key_rps if body.rps is None else body.rps,
        burst=s.key_burst if body.burst is None else body.burst,
        upload_mb_per_hour=(
            s.key_upload_mb_per_hour if body.upload_mb_per_hour is None else body.upload_mb_per_hour
        ),
    )
    token, made = store.create(body.name, body.scope, body.collections, limits)
    return {"key": token} | made.to_public()
