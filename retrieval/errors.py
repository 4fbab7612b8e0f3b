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


class CollectionMovedError(QuarryError):
    """The collection moved to another model while a writer embedded for the old one: a
    passing state (the file is tried again), not the file's fault."""

    code = "collection_moved"
    status = 409


class NotFoundError(QuarryError):
    code = "not_found"
    status = 404


class StoreRejectedError(QuarryError):
    """The store refused a request (a 4xx): not an outage, so not waited out."""

    code = "store_rejected"
    status = 500


class StoreFullError(QuarryError):
    """The store's disk is full: writes wait until there is room (never a file's fault)."""

    code = "insufficient_storage"
    status = 507


def disk_full(exc: BaseException) -> bool:
    """Whether a failure (from any library) means the disk is full."""
    if isinstance(exc, OSError) and exc.errno in (28, 122):  # ENOSPC, EDQUOT
        return True
    text = str(exc).lower()
    return "no space left" in text or "os error 28" in text or "disk quota" in text
