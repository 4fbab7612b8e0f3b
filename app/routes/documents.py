"""Upload documents (as ingestion jobs), list, read and delete them."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from app.access import Access
from app.deps import State
from app.pairs import parse_pairs
from app.schemas import (
    COLLECTION_PATTERN,
    COMMON_ERRORS,
    Accepted,
    Deleted,
    DocumentOut,
    DocumentPage,
    Hit,
    error_responses,
)
from embedding.errors import InvalidInputError
from ingest.jobs import Job
from ingest.uploads import Rejection
from retrieval.document_pages import DocumentPage as StorePage
from retrieval.document_pages import DocumentQuery
from retrieval.errors import NotFoundError
from retrieval.models import DocumentInfo

router = APIRouter(
    prefix="/v1", tags=["documents"], responses=COMMON_ERRORS | error_responses(404, 409, 415, 507)
)

CollectionQuery = Annotated[str | None, Query(pattern=COLLECTION_PATTERN)]


def parse_metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"metadata: not valid JSON ({exc.msg} at position {exc.pos})",
            detail={"field": "metadata"},
        ) from exc
    if not isinstance(value, dict):
        raise InvalidInputError(
            'metadata: must be a JSON object, e.g. {"team": "legal"}',
            detail={"field": "metadata"},
        )
    return value


_FORM_ESCAPE = re.compile(r"%(0[0-9A-F]|1[0-9A-F]|22)")


def form_filename(raw: str | None) -> str | None:
    """Undo the escapes of the HTML form encoding in multipart file names (browsers send a
    newline as %0A and a quote as %22; httpx any control character as %XX), so a name comes
    back as it was given. The rule: `%00`-`%1F` and `%22` in a name are those characters."""
    if raw is None:
        return None
    return _FORM_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw)


def _document(info: DocumentInfo) -> DocumentOut:
    return DocumentOut(**info.to_dict())


@router.post("/documents", status_code=202, response_model=Accepted)
async def upload_documents(
    state: State,
    access: Access,
    files: Annotated[list[UploadFile], File(description="one or many documents")],
    metadata: Annotated[str | None, Form(description="JSON object stored with each file")] = None,
    collection: Annotated[str | None, Form(pattern=COLLECTION_PATTERN)] = None,
    force: Annotated[
        bool, Form(description="re-parse files even when unchanged or known to have failed")
    ] = False,
) -> Accepted:
    """Stage the files to disk and queue an ingestion job; bad files are reported one by one.

    Each file's name is its source key: a new upload under the same name replaces the
    document once the new version is completely stored.
    """
    name = access.collection(collection or state.settings.collection)
    meta = parse_metadata(metadata)
    await run_in_threadpool(state.resources.check_recipe_early, name)
    job, rejected = await state.jobs.upload(
        name,
        meta,
        int(state.settings.max_file_mb * 1e6),
        [(form_filename(f.filename), f.file) for f in files],
        force=force,
    )
    return _accepted(job, name, rejected)


def _accepted(job: Job, collection: str, rejected: list[Rejection]) -> Accepted:
    return Accepted(
        job_id=job.id,
        collection=collection,
        accepted=[f.name for f in job.files if f.staged],
        rejected=[r.to_dict() for r in rejected],
        status_url=f"/v1/jobs/{job.id}",
        events_url=f"/v1/jobs/{job.id}/events",
    )


@router.get("/documents", response_model=DocumentPage)
async def list_documents(
    state: State,
    access: Access,
    collection: CollectionQuery = None,
    source: Annotated[str | None, Query(description="part of the file name")] = None,
    meta: Annotated[list[str] | None, Query(description="key=value, repeatable")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> DocumentPage:
    """Documents of a collection, filtered by file name and metadata, a page at a time
    (found in the store: a request reads its page, not the whole collection)."""
    name = access.collection(collection or state.settings.collection)
    query = DocumentQuery(offset, limit, source or "", parse_pairs(meta, "meta"))
    found = await run_in_threadpool(_page, state, name, query)
    return DocumentPage(
        collection=name,
        total=found.total,
        offset=offset,
        limit=limit,
        documents=[_document(d) for d in found.documents],
    )


def _page(state: State, collection: str, query: DocumentQuery) -> StorePage:
    store = state.resources.store
    return store.document_page(collection, query) if store.recipe(collection) else StorePage(0, [])


@router.get("/documents/{doc_id}", response_model=DocumentOut, response_model_exclude_none=True)
async def get_document(
    state: State,
    access: Access,
    doc_id: str,
    collection: CollectionQuery = None,
    include_chunks: bool = False,
) -> DocumentOut:
    """One document's metadata and chunk count, and its chunks with `include_chunks=true`."""
    name = access.collection(collection or state.settings.collection)
    store = state.resources.store
    info = await run_in_threadpool(lambda: store.document(name, doc_id))
    if info is None:
        raise NotFoundError(f"no document {doc_id!r} in collection {name!r}")
    out = _document(info)
    if include_chunks:
        chunks = await run_in_threadpool(store.chunks, name, doc_id)
        out.chunk_list = [Hit(**vars(c)) for c in chunks]
    return out


@router.delete("/documents/{doc_id}", response_model=Deleted)
async def delete_document(
    state: State, access: Access, doc_id: str, collection: CollectionQuery = None
) -> Deleted:
    """Delete a document and every one of its chunks."""
    name = access.collection(collection or state.settings.collection)
    removed = await run_in_threadpool(state.delete_document, name, doc_id)
    return Deleted(doc_id=doc_id, deleted_chunks=removed)


@router.post("/documents/{doc_id}/reingest", status_code=202, response_model=Accepted)
async def reingest_document(
    state: State, access: Access, doc_id: str, collection: CollectionQuery = None
) -> Accepted:
    """Parse, chunk and embed a document again from its kept original (a new job)."""
    name = access.collection(collection or state.settings.collection)
    job = await run_in_threadpool(state.reingest, name, doc_id)
    await state.jobs.submit(job)
    return _accepted(job, name, [])
