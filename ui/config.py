"""The UI's own settings: where the API is and the key to use (it needs nothing else)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class UiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_", env_file=".env", extra="ignore")

    api_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    api_timeout_s: float = 60.0
