"""The server's backup of its data dir (`app.backup`), streamed as a gzipped tar."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from app import backup
from app.deps import State
from app.schemas import COMMON_ERRORS

router = APIRouter(prefix="/v1", tags=["backup"], responses=COMMON_ERRORS)


def _archive(state: State, folder: Path) -> Path:
    backup.take(state.resources.store, state.settings, folder / "backup")
    archive = folder / "backup.tar.gz"  # (the store's preallocated pages: mostly zeros)
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(folder / "backup", arcname=".")
    shutil.rmtree(folder / "backup")
    return archive


@router.get(
    "/backup",
    response_class=FileResponse,
    responses={200: {"content": {"application/gzip": {}}, "description": "the backup"}},
)
async def take_backup(state: State) -> FileResponse:
    """A consistent backup of the data dir (collections, kept originals, failure ledgers,
    sources), as a gzipped tar whose `manifest.json` lists every file's SHA-256: `quarry backup
    DEST` unpacks and verifies it."""
    room = state.settings.data_dir / ".backups"  # beside the data: the same disk
    room.mkdir(parents=True, exist_ok=True)
    for left in room.iterdir():  # one whose client went away before it was cleaned up
        if time.time() - left.stat().st_mtime > 3600:
            shutil.rmtree(left, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(dir=room))
    try:
        archive = await run_in_threadpool(_archive, state, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        archive,
        media_type="application/gzip",
        filename="quarry-backup.tar.gz",
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )
