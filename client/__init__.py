"""Quarry's HTTP client: one package shared by the web UI and the CLI's remote side.

It belongs to neither (the UI talks to the API over HTTP only, and `app/` never imports
`ui/`): both import `client.ApiClient` and `client.ClientSettings`.
"""

from client.config import ClientSettings
from client.http import ApiClient, ApiError

__all__ = ["ApiClient", "ApiError", "ClientSettings"]
