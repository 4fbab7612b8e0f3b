"""Store-side errors, rendered by the API with their status and stable code."""

from __future__ import annotations

from embedding.errors import QuarryError


class StoreUnavailableError(QuarryError):
    code = "store_unavailable"
    status = 503


class RecipeMismatchError(QuarryError):
    """The collection was built with another embedding recipe; its vectors would not match."""

    code = "recipe_mismatch"
    status = 409


class NotFoundError(QuarryError):
    code = "not_found"
    status = 404


class StoreRejectedError(QuarryError):
    """The store refused a request (a 4xx): not an outage, so not waited out."""

    code = "store_rejected"
    status = 500
