"""A client's settings: where the API is and the key to use (nothing else is needed)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_", env_file=".env", extra="ignore")

    api_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    api_timeout_s: float = 60.0


UiSettings = ClientSettings  # the web UI's name for them
