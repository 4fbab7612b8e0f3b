"""Named sources a collection follows (`app.sources`): add, list, remove, sync now."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from app.access import Access
from app.deps import State
from app.schemas import COMMON_ERRORS, error_responses
from app.sources import SOURCE_NAME, Allowed, Source, SourceIn, SourceRunner, new_source

router = APIRouter(prefix="/v1", tags=["sources"], responses=COMMON_ERRORS)
NamePath = Annotated[str, Path(pattern=SOURCE_NAME.pattern)]


def allowed(state: State) -> Allowed:
    s = state.settings
    return Allowed(s.sync_root_paths, s.sync_bucket_list)


def _runner(state: State) -> SourceRunner:
    if state.sources is None:
        raise RuntimeError("the app is not started")
    return state.sources


@router.get("/sources")
async def list_sources(state: State, access: Access) -> dict[str, Any]:
    """Every source (this key may see), with what its last run did."""
    found = await run_in_threadpool(_runner(state).registry.list)
    return {"sources": [s.to_dict() for s in found if access.sees(s.collection)]}


def _own(state: State, access: Access, name: str) -> Source:
    """The named source, if the key may use its collection."""
    source = _runner(state).registry.get(name)
    access.collection(source.collection)
    return source


@router.post("/sources", status_code=201, responses=error_responses(422))
async def add_source(state: State, access: Access, body: SourceIn) -> dict[str, Any]:
    """Follow a source (its first sync starts at once when it has a schedule)."""
    source = new_source(body, state.settings.collection, allowed(state))
    access.collection(source.collection)
    added = await run_in_threadpool(_runner(state).registry.add, source)
    return added.to_dict()


@router.get("/sources/{name}", responses=error_responses(404))
async def get_source(state: State, access: Access, name: NamePath) -> dict[str, Any]:
    return (await run_in_threadpool(_own, state, access, name)).to_dict()


@router.delete("/sources/{name}", responses=error_responses(404))
async def remove_source(state: State, access: Access, name: NamePath) -> dict[str, Any]:
    """Stop following a source; its documents stay in the collection."""
    await run_in_threadpool(_own, state, access, name)
    removed = await run_in_threadpool(_runner(state).registry.remove, name)
    return {"removed": removed.name}


@router.post("/sources/{name}/sync", status_code=202, responses=error_responses(404))
async def sync_source_now(state: State, access: Access, name: NamePath) -> dict[str, Any]:
    """Start a run now (or say the one going on); poll the source for its outcome."""
    await run_in_threadpool(_own, state, access, name)
    source, run = await run_in_threadpool(_runner(state).sync_now, name)
    return source.to_dict() | {"running": True, "run": run}
