"""Moving a collection to another embedding model (`app.migration`), as a job."""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.access import Access
from app.deps import State
from app.migrations import Migrations
from app.schemas import COLLECTION_PATTERN, COMMON_ERRORS, error_responses
from embedding.errors import InvalidInputError
from embedding.model_source import on_this_machine

router = APIRouter(prefix="/v1", tags=["collections"], responses=COMMON_ERRORS)
NamePath = Annotated[str, Path(pattern=COLLECTION_PATTERN)]


class MigrateIn(BaseModel):
    model: str = Field(
        default="",
        max_length=500,
        description="the model to move to: a name (packaged, or in the Hugging Face cache) "
        "or a folder under QUARRY_MODEL_ROOTS",
    )
    dim: int | None = Field(default=None, ge=32, le=65536, description="a Matryoshka width")
    rollback: bool = Field(
        default=False, description="move back to the version kept by the last migration"
    )


def _migrations(state: State) -> Migrations:
    if state.migrations is None:
        raise RuntimeError("the app is not started")
    return state.migrations


def check_model_location(model: str, roots: list[FsPath], own: str) -> None:
    """A client key may name a model folder only under QUARRY_MODEL_ROOTS (or the one the
    server is configured with, `own`), and a model by name only when it is here already.

    Raises:
        InvalidInputError: the folder lies elsewhere.
    """
    if not model.strip():
        raise InvalidInputError("model: name the model to move to", detail={"field": "model"})
    folder = FsPath(model).expanduser()
    if own and model == own:
        return
    if not folder.is_dir() and not model.startswith(("/", ".", "~")):
        if on_this_machine(model):
            return  # a name: packaged, or in the hub's cache (never downloaded for a client)
        raise InvalidInputError(
            f"model: {model!r} is neither packaged nor in this server's Hugging Face cache; "
            "download it there first (huggingface-cli download) or use QUARRY_MODEL_ROOTS",
            detail={"field": "model"},
        )
    resolved = folder.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise InvalidInputError(
            f"model: {model!r} names a folder outside QUARRY_MODEL_ROOTS; the server loads "
            "models from those folders only",
            detail={"field": "model"},
        )


@router.post("/collections/{name}/migrate", status_code=202, responses=error_responses(404, 409))
async def migrate(state: State, access: Access, name: NamePath, body: MigrateIn) -> dict[str, Any]:
    """Build the collection again with another model beside the live one and swap it in
    when complete (searches never fail or mix the two); poll the migration for progress.
    With `rollback`, move back to the version the last migration kept."""
    access.collection(name)
    if not body.rollback:
        s = state.settings
        own = s.embedding_model or ""  # (reads the disk: off the event loop)
        await run_in_threadpool(check_model_location, body.model, s.model_root_paths, own)
    migrations = _migrations(state)
    started = await run_in_threadpool(migrations.prepare, name, body.model, body.dim, body.rollback)
    migrations.start(started)
    return started.to_dict()


@router.get("/collections/{name}/migration", responses=error_responses(404))
async def migration(state: State, access: Access, name: NamePath) -> dict[str, Any]:
    """The collection's latest migration: stage, documents done of total, ETA, error."""
    access.collection(name)
    return (await run_in_threadpool(_migrations(state).status, name)).to_dict()


@router.delete("/collections/{name}/migration", responses=error_responses(404))
async def cancel_migration(state: State, access: Access, name: NamePath) -> dict[str, Any]:
    """Stop a migration before its swap; starting it again resumes where it was."""
    access.collection(name)
    return (await run_in_threadpool(_migrations(state).cancel, name)).to_dict()
