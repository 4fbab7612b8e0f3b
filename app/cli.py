"""The `quarry` command line: ingest, search, docs, stats, eval."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.cli_backup import backup_command, restore_command
from app.cli_common import (
    ApiOpt,
    CollectionOpt,
    JsonOpt,
    ModeOpt,
    console,
    emit,
    load_settings,
    opened_resources,
    quarry_for,
    reporting_errors,
)
from app.cli_keys import keys_app
from app.cli_migrate import migrate_command
from app.cli_sources import sources_app
from app.keys import keys_marker
from app.ownership import running_server, worker_credential
from app.pairs import parse_pairs
from app.progress import RichIngestProgress
from app.resources import Resources
from app.settings import Settings
from app.sync import SyncReport, sync_source
from app.sync_sources import FolderSource, open_source
from app.sync_watch import follow
from embedding.errors import InvalidInputError, ModelLoadError, QuarryError
from embedding.redis_server import embedded_redis_url
from ingest.models import FileError
from ingest.sources import expand_paths

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Quarry: index documents, search them."
)
docs_app = typer.Typer(no_args_is_help=True, help="List or delete stored documents.")
app.add_typer(docs_app, name="docs")
app.add_typer(sources_app, name="sources")
app.add_typer(keys_app, name="keys")
app.command("backup")(backup_command)
app.command("restore")(restore_command)
app.command("migrate")(migrate_command)


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="files, folders (recursive) or globs")],
    collection: CollectionOpt = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="key=value metadata")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="re-parse unchanged and previously failed files")
    ] = False,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Parse, chunk, embed and store documents; unchanged files are skipped.

    A file's identity is its path relative to the folder or glob given (a file given alone:
    its name), so a changed file replaces its previous version.
    """
    with reporting_errors():
        metadata = parse_pairs(meta, "--meta")
    files, missing = expand_paths(paths)
    errors = [
        FileError(p, "not_found", f"{p}: no such file, folder or matching glob") for p in missing
    ]
    show = not as_json and console.is_terminal
    settings = load_settings()
    name = collection or settings.collection
    with (
        quarry_for(api, settings) as target,
        RichIngestProgress(len(files), console, enabled=show) as bar,
    ):
        report = target.ingest(files, collection=name, metadata=metadata, force=force, observer=bar)
    report.errors = errors + report.errors
    report.files += len(missing)
    if as_json:
        emit(report.to_dict())
    else:
        console.print(
            f"[bold]{report.files}[/bold] files: [green]{report.ingested} ingested[/green], "
            f"{report.unchanged} unchanged, [red]{len(report.errors)} failed[/red]"
            + (f", {report.superseded} superseded" if report.superseded else "")
            + (f", [yellow]{len(report.retrying)} to retry[/yellow]" if report.retrying else "")
            + f"; {report.chunks} chunks in {report.seconds:.1f}s into {escape(repr(name))}"
        )
        if not show:  # the live view already printed them
            for error in report.errors + report.retrying:
                console.print(f"[red]✗[/red] {escape(error.message)} ({error.code})")
            for warning in report.warnings:
                console.print(f"[yellow]![/yellow] {escape(warning)}")
    if report.ingested + report.unchanged + report.superseded == 0:
        raise typer.Exit(1)


@app.command()
def sync(
    source: Annotated[
        str,
        typer.Argument(help="the folder, or the s3://BUCKET/PREFIX, whose files it holds"),
    ],
    collection: CollectionOpt = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            envvar="AWS_ENDPOINT_URL",
            help="an S3-compatible server's URL (MinIO, Ceph, R2); AWS when unset",
        ),
    ] = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="key=value metadata")] = None,
    max_delete: Annotated[
        float, typer.Option("--max-delete", min=0, max=1, help="share a run may delete")
    ] = 0.5,
    force_delete: Annotated[
        bool, typer.Option("--force-delete", help="delete past --max-delete")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="keep following the folder as it changes")
    ] = False,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the collection match SOURCE (a folder or an S3 bucket prefix): new and changed
    files are ingested, documents whose files are gone are removed; a file whose size and
    time (an object whose ETag) did not change is not read (downloaded) again. With
    --watch, a folder is synced again after every batch of changes (one line each)."""
    with reporting_errors():
        metadata = parse_pairs(meta, "--meta")
        where = open_source(source, endpoint)
        if watch and not isinstance(where, FolderSource):
            raise InvalidInputError(f"{source}: --watch follows a local folder, not a bucket")
    settings = load_settings()
    name = collection or settings.collection
    show = not as_json and console.is_terminal and not watch
    with quarry_for(api, settings) as target, RichIngestProgress(0, console, enabled=show) as bar:

        def once() -> None:
            if watch:  # a failed run (the server restarting, say) waits for the next change
                try:
                    sync_once()
                except QuarryError as exc:
                    console.print(f"[red]error:[/red] {escape(exc.message)} ({exc.code})")
            else:
                sync_once()

        def sync_once() -> None:
            report = sync_source(
                target,
                where,
                collection=name,
                metadata=metadata,
                observer=bar,
                stamps_dir=settings.data_dir / "sync",
                max_delete_share=max_delete,
                force_delete=force_delete,
            )
            _show_sync(report, name, as_json, compact=watch)
            if report.refused and not watch:
                raise typer.Exit(1)

        with reporting_errors():
            follow(Path(where.root), once) if watch else once()


def _show_sync(report: SyncReport, name: str, as_json: bool, compact: bool) -> None:
    done = report.ingest
    if as_json and compact:  # one line per run
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif as_json:
        emit(report.to_dict())
    else:
        console.print(
            f"{escape(report.source)}: {report.listed} files, [green]{done.ingested} ingested"
            f"[/green], {report.unchanged} unchanged, {len(report.deleted)} deleted, "
            f"[red]{len(done.errors)} failed[/red] in {escape(repr(name))}"
        )
        for error in done.errors + done.retrying:
            console.print(f"[red]✗[/red] {escape(error.message)} ({error.code})")
    if report.refused:
        console.print(f"[red]error:[/red] {escape(report.refused)} (deletion_refused)")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, max=1000)] = 5,
    filters: Annotated[list[str] | None, typer.Option("--filter", help="key=value")] = None,
    instruction: Annotated[str | None, typer.Option(help="task instruction for this query")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="minimum score")] = None,
    mode: ModeOpt = None,
    rerank: Annotated[
        bool, typer.Option("--rerank", help="rescore the candidates with QUARRY_RERANK_MODEL")
    ] = False,
    collection: CollectionOpt = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search: dense (instructed query), sparse (BM25) or hybrid (both, fused)."""
    with reporting_errors():
        wanted = parse_pairs(filters, "--filter")
    settings = load_settings()
    with quarry_for(api, settings) as target:
        answer = target.search(
            query,
            collection=collection or settings.collection,
            top_k=k,
            filters=wanted,
            instruction=instruction,
            threshold=threshold,
            mode=mode,
            rerank=rerank,
        )
    hits = answer["hits"]
    if as_json:
        emit(hits)  # the API's hit shape, whichever door
        return
    if answer.get("note"):
        console.print(f"[dim]{escape(answer['note'])}[/dim]")
    table = Table(show_lines=True)
    for column in ("score", "source", "page", "text"):
        table.add_column(column, overflow="fold")
    for hit in hits:
        text = str(hit["text"])
        snippet = text if len(text) < 400 else text[:400] + "…"
        table.add_row(
            f"{hit['score']:.3f}",
            escape(str(hit["source"])),
            str(hit["page"] or ""),
            escape(snippet),
        )
    Console().print(table)


@docs_app.command("list")
def docs_list(
    collection: CollectionOpt = None, api: ApiOpt = None, as_json: JsonOpt = False
) -> None:
    """Documents in a collection, with their chunk counts."""
    settings = load_settings()
    name = collection or settings.collection
    with quarry_for(api, settings) as target:
        docs = target.documents(name)
    if as_json:
        emit(docs)
        return
    table = Table(title=f"{len(docs)} documents in {name!r}")
    for column in ("doc_id", "source", "type", "chunks", "ingested at", "metadata"):
        table.add_column(column, overflow="fold")
    for doc in docs:
        complete = doc["chunks"] == doc["expected_chunks"]
        chunks = str(doc["chunks"]) if complete else f"{doc['chunks']}/{doc['expected_chunks']}"
        table.add_row(
            doc["doc_id"],
            escape(doc["source"]),
            doc["file_type"],
            chunks,
            doc["ingested_at"],
            escape(json.dumps(doc["metadata"])) if doc["metadata"] else "",
        )
    Console().print(table)


@docs_app.command("delete")
def docs_delete(doc_id: str, collection: CollectionOpt = None, api: ApiOpt = None) -> None:
    """Delete a document and every one of its chunks."""
    settings = load_settings()
    with quarry_for(api, settings) as target:
        removed = target.delete_document(collection or settings.collection, doc_id)
    console.print(f"deleted {doc_id} ({removed} chunks)")


@app.command()
def stats(collection: CollectionOpt = None, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Collections, their recipes and sizes (never loads the model)."""
    settings = load_settings()
    with quarry_for(api, settings) as target:
        rows: list[dict[str, Any]] = [
            {
                "collection": c["name"],
                "chunks": c["chunks"],
                "documents": c["documents"],
                "recipe": c["recipe"],
            }
            for c in target.collections()
        ]
        store = target.where
        model = target.model()
    data = {
        "collection": collection or settings.collection,
        "store": store,
        "cache": settings.redis_url or f"embedded ({settings.redis_dir})",
        "model": model,
        "collections": rows,
    }
    if as_json:
        emit(data)
        return
    console.print(f"store: {data['store']}\ncache: {data['cache']}")
    in_use = model.get("model") or model.get("reason", "unknown")
    console.print(
        f"model: {escape(in_use)}" + (f" ({escape(model['chosen'])})" if "chosen" in model else "")
    )
    if model.get("warning"):
        console.print(f"[yellow]warning:[/yellow] {escape(model['warning'])}")
    table = Table(title="collections")
    for column in ("collection", "documents", "chunks", "model", "dim"):
        table.add_column(column)
    for row in rows:
        described: dict[str, Any] = row["recipe"] or {}
        table.add_row(
            row["collection"],
            str(row["documents"]),
            str(row["chunks"]),
            str(described.get("model", "")),
            str(described.get("dimension", "")),
        )
    Console().print(table)


@app.command(name="backfill-sparse")
def backfill_sparse(collection: CollectionOpt = None, api: ApiOpt = None) -> None:
    """Add BM25 vectors to a collection built before they existed, or rebuild them in the
    current analyser (no re-embedding)."""
    settings = load_settings()
    name = collection or settings.collection
    with quarry_for(api, settings) as target:
        updated = target.backfill_sparse(name)
    said = (
        f"{updated} chunks now have current BM25 vectors"
        if updated
        else "its BM25 vectors are current already"
    )
    console.print(f"{name}: {said}; hybrid search is its default now")


@app.command("eval")
def eval_command(
    dataset: Annotated[
        Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    ],
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    whole_documents: Annotated[
        bool, typer.Option("--whole-documents", help="one chunk per document, truncated like MTEB")
    ] = False,
    instruction: Annotated[
        str | None, typer.Option(help="query instruction (Qwen3 models)")
    ] = None,
    mode: ModeOpt = None,
    vectors: Annotated[
        str | None,
        typer.Option(help="full, small or two-stage (collections with a small Matryoshka vector)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """nDCG@10 and Recall@100 on a BEIR dataset, through the normal pipeline and search."""
    from ingest.evaluation import evaluate, load_beir

    with opened_resources(_eval_settings(load_settings())) as res:
        sources, queries, qrels = load_beir(dataset, split)
        chunking = "whole" if whole_documents else "chunked"
        base = res.base_embedder.recipe
        collection = f"eval-{dataset.name}-{chunking}-{base.fingerprint()[:8]}"
        show = not as_json and console.is_terminal
        with RichIngestProgress(len(sources), console, enabled=show) as progress:
            pipeline = res.pipeline(
                collection, progress, whole_documents=whole_documents, instruction=instruction
            )
            res.check_recipe_early(collection)
            scores, report = evaluate(
                pipeline,
                lambda: res.search_service(collection),
                sources,
                queries,
                qrels,
                instruction or res.settings.query_instruction,
                mode,
                # An eval collection from before BM25 vectors existed gets them now.
                prepare=lambda: res.backfill_sparse(collection) if mode != "dense" else 0,
                vectors=vectors,
            )
        # The engine that made the vectors (as run, the model loaded by now): the same
        # figures per QUARRY_CPU_BACKEND and QUARRY_QUANTIZE
        engine = res.base_embedder.recipe.engine
        scores["engine"] = engine or "fp32"
        if report.errors:
            console.print(
                f"[yellow]{len(report.errors)} corpus documents failed to ingest[/yellow]"
            )
        if as_json:
            emit(scores)
        else:
            console.print(
                f"{dataset.name} ({chunking}, {scores['mode']}, {scores['vectors']}, "
                f"{scores['engine']}): "
                f"nDCG@10 {scores['ndcg@10']:.2f}  "
                f"Recall@100 {scores['recall@100']:.2f}  over {scores['queries']} queries, "
                f"{scores['ms_per_query']:.1f} ms a query"
            )
            if scores.get("qrels_without_query"):
                console.print(
                    f"({scores['qrels_without_query']} questions judged in the qrels have no "
                    "query in queries.jsonl; they are not scored)"
                )


def _eval_settings(settings: Settings) -> Settings:
    """Where an evaluation runs: in the data dir, or, while a server owns it, in a data dir
    of its own inside it (an evaluation builds and searches its own collection either way),
    sharing the server's Redis cache."""
    if running_server(settings.data_dir) is None:
        return settings
    redis_url = settings.redis_url or embedded_redis_url(settings.redis_dir)
    return settings.model_copy(
        update={"data_dir": settings.data_dir / "eval", "redis_url": redis_url}
    )


def _check_model(resources: Resources) -> None:
    """Say which model runs; a configuration error stops the start, while a model not found
    yet is /readyz's business."""
    try:
        choice = resources.model_choice
    except ModelLoadError as exc:
        console.print(f"[red]embedding model:[/red] {escape(exc.message)}")
        return
    console.print(f"embedding model: {choice.source.model_id} ({escape(choice.reason)})")
    if choice.warning:
        console.print(f"[yellow]warning:[/yellow] {escape(choice.warning)}")
    resources.check_dimension()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface (QUARRY_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (QUARRY_PORT)")] = None,
    embeddings_only: Annotated[
        bool,
        typer.Option(
            "--embeddings-only",
            help="serve only /v1/embeddings and /v1/models (a GPU node: no store, no jobs)",
        ),
    ] = False,
    allow_open: Annotated[
        bool,
        typer.Option(
            "--allow-open",
            help="listen on a non-loopback address without API keys (QUARRY_ALLOW_OPEN)",
        ),
    ] = False,
) -> None:
    """Run the HTTP API (uvicorn), on the embedded defaults when nothing is configured.

    Closed by default: on an address other than loopback it refuses to start without
    QUARRY_API_KEYS, unless an open server is asked for (--allow-open).
    """
    import uvicorn

    from app.main import create_app

    settings = load_settings()
    if embeddings_only and settings.quantize != "none":
        # Its clients record its vectors as the model's own: they cannot see its engine.
        if "quantize" in settings.model_fields_set:
            console.print(
                "[yellow]QUARRY_QUANTIZE is ignored by an embedding node: its clients record "
                "its vectors as the model's own, so it serves them fp32[/yellow]"
            )
        settings = settings.model_copy(update={"quantize": "none"})
    bind_host, bind_port = host or settings.host, port or settings.port
    with reporting_errors():
        keyed = bool(settings.api_key_set) or keys_marker(settings).exists()
        check_exposure(bind_host, keyed, allow_open or settings.allow_open)
    reach = "127.0.0.1" if bind_host in ("0.0.0.0", "::", "") else bind_host
    role = "quarry serve --embeddings-only" if embeddings_only else "quarry serve"
    resources = Resources(settings, role=role)
    with reporting_errors():  # a second server on this data dir stops here, naming the first
        _check_model(resources)
        if not embeddings_only:  # a model node holds no data dir: many may share a machine
            resources.claim(f"http://{reach}:{bind_port}")
    level = os.environ.get("QUARRY_LOG_LEVEL", "info").lower()
    uvicorn.run(
        create_app(
            settings, resources, embeddings_only=embeddings_only, url=f"http://{reach}:{bind_port}"
        ),
        host=bind_host,
        port=bind_port,
        log_level=level,
        timeout_graceful_shutdown=10,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="files processed at once (QUARRY_WORKER_CONCURRENCY)", min=1, max=64),
    ] = None,
) -> None:
    """Take files from the ingestion queue: parse, chunk, embed and store them.

    Needs the data dir the server stages uploads in (a shared volume across machines) and
    its Redis (QUARRY_REDIS_URL, or the embedded one of a server on this machine). With a
    Qdrant server (QUARRY_QDRANT_URL) it writes there; with the embedded store it hands
    its batches to the server owning it (QUARRY_API_URL, or found in the data dir).
    """
    import asyncio

    from app.supervisor import die_with_parent
    from app.worker import IngestWorker

    die_with_parent()
    settings = load_settings()
    slots = concurrency or settings.worker_concurrency
    with reporting_errors():
        owner, settings = _worker_setup(settings.model_copy(update={"parse_workers": slots}))
        key = worker_credential(settings.data_dir) if owner else None
        resources = Resources(settings, role="quarry worker", store_owner=owner, owner_key=key)
        try:
            running = IngestWorker(resources, slots)
            asyncio.run(running.run())
        finally:
            resources.close()


def check_exposure(host: str, has_keys: bool, allow_open: bool) -> None:
    """Refuse to serve an address others can reach without keys, unless told to.

    Raises:
        InvalidInputError: a non-loopback address, no API keys, no --allow-open.
    """
    if has_keys or allow_open:
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise InvalidInputError(
            f"quarry serve: {host} is reachable from other machines and QUARRY_API_KEYS is "
            "empty, so anyone there could read and change every document. Set "
            "QUARRY_API_KEYS, bind 127.0.0.1, or pass --allow-open (QUARRY_ALLOW_OPEN=1) "
            "if an open server is what you want"
        )


def _worker_setup(settings: Settings) -> tuple[str | None, Settings]:
    """The store's owner (None with a Qdrant server) and settings with the queue's Redis.

    Raises:
        InvalidInputError: the embedded store or Redis has no live owner to go through.
    """
    owner = None
    if not settings.qdrant_url:
        owner = os.environ.get("QUARRY_API_URL") or running_server(settings.data_dir)
        if owner is None:
            raise InvalidInputError(
                f"quarry worker: no server owns the data dir {settings.data_dir} (its embedded "
                "store takes the workers' batches): start `quarry serve` on it, set "
                "QUARRY_API_URL, or set QUARRY_QDRANT_URL to write to a Qdrant server"
            )
    if not settings.redis_url:
        url = embedded_redis_url(settings.redis_dir)
        if url is None:
            raise InvalidInputError(
                "quarry worker: set QUARRY_REDIS_URL (the queue's Redis), or run it beside "
                f"a server whose embedded Redis lives in {settings.redis_dir}"
            )
        settings = settings.model_copy(update={"redis_url": url})
    return owner, settings


@app.command()
def ui(
    host: Annotated[str, typer.Option(envvar="QUARRY_UI_HOST", help="interface")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="QUARRY_UI_PORT", help="port")] = 8501,
) -> None:
    """Run the web UI (Streamlit); it talks to the API at QUARRY_API_URL."""
    import importlib.util

    spec = importlib.util.find_spec("ui")
    if spec is None or not spec.submodule_search_locations:
        console.print("[red]error:[/red] the ui package is not installed")
        raise typer.Exit(2)
    script = Path(next(iter(spec.submodule_search_locations))) / "app.py"
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.maxUploadSize", "1024",
        "--browser.gatherUsageStats", "false",
        "--client.showErrorDetails", "none",
        "--client.toolbarMode", "minimal",
        "--theme.base", "light",
        "--theme.primaryColor", "#2563eb",
    ]  # fmt: skip
    os.execv(sys.executable, command)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("QUARRY_LOG_LEVEL", "WARNING").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    app()


if __name__ == "__main__":
    main()
