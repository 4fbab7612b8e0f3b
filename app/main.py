"""The FastAPI app factory; its lifespan owns the model, store, cache and job workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app.deps import bearer_scheme
from app.errors import install_error_handlers
from app.guard import Guard
from app.limits import BodySizeLimit, limits
from app.metrics import RequestTimer
from app.resources import Resources
from app.routes import (
    backup,
    collections,
    documents,
    embeddings,
    health,
    jobs,
    keys,
    migrations,
    search,
    sources,
    store,
)
from app.settings import Settings
from app.state import QuarryState


def create_app(
    settings: Settings | None = None,
    resources: Resources | None = None,
    *,
    embeddings_only: bool = False,
    url: str | None = None,
) -> FastAPI:
    """Build the API; nothing is opened until the lifespan starts (`resources` may hold the
    data dir's claim already, taken by `quarry serve` before it binds its port).

    `embeddings_only` builds a model node: `/v1/embeddings`, `/v1/models` and health only.
    `url` is where this server is reached, for the worker processes it starts (without it,
    ingestion runs on an in-process worker).
    """
    settings = settings or Settings()
    state = QuarryState(settings, resources, embeddings_only=embeddings_only, url=url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.quarry = state
        await state.start()
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
    guarded = [Depends(bearer_scheme)]
    everything = (
        documents,
        jobs,
        search,
        embeddings,
        collections,
        migrations,
        store,
        sources,
        backup,
        keys,
    )
    for module in (embeddings,) if embeddings_only else everything:
        app.include_router(module.router, dependencies=guarded)
    app.include_router(health.router)
    # Added innermost first: the timer sees every answer, the key (its scope, its limits) is
    # checked before the size, and both before any body is read.
    app.add_middleware(
        BodySizeLimit,
        limit_for=limits(int(settings.max_upload_mb * 1e6), int(settings.max_body_mb * 1e6)),
    )
    app.add_middleware(
        Guard, control=lambda: state.access, internal_token=lambda: state.worker_credential
    )
    app.add_middleware(RequestTimer, metrics=state.metrics)
    return app
