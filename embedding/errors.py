"""Quarry's error tree: every failure carries a stable code and an HTTP status."""

from __future__ import annotations

from typing import Any


class QuarryError(Exception):
    """Base of every error Quarry reports to a user; `code` is stable, `message` readable."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class ModelLoadError(QuarryError):
    """The embedding model could not be found or loaded."""

    code = "model_unavailable"
    status = 503


class InvalidInputError(QuarryError):
    """A request or argument is malformed (names the field and the reason)."""

    code = "invalid_input"
    status = 422


class EmbeddingUnavailableError(QuarryError):
    """No embedding server answered in time; the message says why each one is out."""

    code = "embedding_unavailable"
    status = 503


class EmbeddingServerError(QuarryError):
    """An embedding server refused a request that no other server would take either."""

    code = "embedding_server_error"
    status = 502


class OverloadedError(QuarryError):
    """Too much is waiting for the model: refused at once, to be retried later."""

    code = "overloaded"
    status = 429

    def __init__(self, message: str, retry_after_s: int = 1, *, detail: Any = None) -> None:
        super().__init__(message, detail=detail)
        self.retry_after_s = retry_after_s


class PayloadTooLargeError(QuarryError):
    """A request asks for more work than one request may (names the field and bound)."""

    code = "payload_too_large"
    status = 413
