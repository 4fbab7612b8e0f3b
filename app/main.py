"""The FastAPI app factory; its lifespan owns the model, store, cache and job workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app.deps import require_key
from app.errors import install_error_handlers
from app.limits import UploadSizeLimit
from app.metrics import RequestTimer
from app.routes import collections, documents, embeddings, health, jobs, search
from app.settings import Settings
from app.state import QuarryState


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; nothing is opened until the lifespan starts."""
    settings = settings or Settings()
    state = QuarryState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.quarry = state
        state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="Quarry",
        summary="Document indexing and query-instructed semantic search",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    guarded = [Depends(require_key)]
    for module in (documents, jobs, search, embeddings, collections):
        app.include_router(module.router, dependencies=guarded)
    app.include_router(health.router)
    app.add_middleware(RequestTimer, metrics=state.metrics)
    app.add_middleware(
        UploadSizeLimit, path="/v1/documents", max_bytes=int(settings.max_upload_mb * 1e6)
    )
    return app
