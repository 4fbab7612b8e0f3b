"""The `quarry` command line: ingest, search, docs, stats, eval."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from app.pairs import parse_pairs
from app.progress import RichIngestProgress
from app.resources import Resources
from app.settings import Settings
from embedding.errors import InvalidInputError, QuarryError
from ingest.models import FileError
from ingest.sources import FileSource, expand_paths
from retrieval.summaries import summarize_collections

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Quarry: index documents, search them."
)
docs_app = typer.Typer(no_args_is_help=True, help="List or delete stored documents.")
app.add_typer(docs_app, name="docs")
console = Console(stderr=True)

CollectionOpt = Annotated[str | None, typer.Option("--collection", "-c", help="collection name")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


@contextmanager
def _resources() -> Iterator[Resources]:
    try:
        resources = Resources(Settings())
    except ValueError as exc:
        console.print(f"[red]error:[/red] invalid settings: {exc}")
        raise typer.Exit(2) from exc
    try:
        yield resources
    except QuarryError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    finally:
        resources.close()


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(help="files, folders (recursive) or globs")],
    collection: CollectionOpt = None,
    meta: Annotated[list[str] | None, typer.Option("--meta", help="key=value metadata")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Parse, chunk, embed and store documents; unchanged files are skipped."""
    with _resources() as res:
        metadata = parse_pairs(meta, "--meta")
        name = collection or res.settings.collection
        files, missing = expand_paths(paths)
        errors = [
            FileError(p, "not_found", f"{p}: no such file, folder or matching glob")
            for p in missing
        ]
        res.check_recipe_early(name)
        sources = [FileSource(path, metadata=metadata) for path in files]
        show = not as_json and console.is_terminal
        with RichIngestProgress(len(sources), console, enabled=show) as progress:
            report = res.pipeline(name, progress).run(sources)
        report.errors = errors + report.errors
        report.files += len(missing)
        if as_json:
            _emit(report.to_dict())
        else:
            console.print(
                f"[bold]{report.files}[/bold] files: [green]{report.ingested} ingested[/green], "
                f"{report.unchanged} unchanged, [red]{len(report.errors)} failed[/red]; "
                f"{report.chunks} chunks in {report.seconds:.1f}s into {name!r}"
            )
            if not show:  # the live view already printed them
                for error in report.errors:
                    console.print(f"[red]✗[/red] {error.message} ({error.code})")
        if report.ingested + report.unchanged == 0:
            raise typer.Exit(1)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, max=1000)] = 5,
    filters: Annotated[list[str] | None, typer.Option("--filter", help="key=value")] = None,
    instruction: Annotated[str | None, typer.Option(help="task instruction for this query")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="minimum score")] = None,
    collection: CollectionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Semantic search with an instructed query."""
    with _resources() as res:
        name = collection or res.settings.collection
        if res.store.recipe(name) is None:
            raise InvalidInputError(f"collection {name!r} is empty: ingest documents first")
        service = res.search_service(name)
        result = service.search(
            name,
            query,
            top_k=k,
            filters=parse_pairs(filters, "--filter"),
            instruction=instruction,
            score_threshold=threshold,
        )
        if as_json:
            _emit([hit.to_dict() for hit in result.hits])
            return
        table = Table(show_lines=True)
        for column in ("score", "source", "page", "text"):
            table.add_column(column, overflow="fold")
        for hit in result.hits:
            snippet = hit.text if len(hit.text) < 400 else hit.text[:400] + "…"
            table.add_row(f"{hit.score:.3f}", hit.source, str(hit.page or ""), snippet)
        Console().print(table)


@docs_app.command("list")
def docs_list(collection: CollectionOpt = None, as_json: JsonOpt = False) -> None:
    """Documents in a collection, with their chunk counts."""
    with _resources() as res:
        name = collection or res.settings.collection
        docs = res.store.documents(name) if res.store.recipe(name) else []
        if as_json:
            _emit([doc.to_dict() for doc in docs])
            return
        table = Table(title=f"{len(docs)} documents in {name!r}")
        for column in ("doc_id", "source", "type", "chunks", "ingested at", "metadata"):
            table.add_column(column, overflow="fold")
        for doc in docs:
            chunks = str(doc.chunks) if doc.complete else f"{doc.chunks}/{doc.expected_chunks}"
            table.add_row(
                doc.doc_id,
                doc.source,
                doc.file_type,
                chunks,
                doc.ingested_at,
                json.dumps(doc.metadata) if doc.metadata else "",
            )
        Console().print(table)


@docs_app.command("delete")
def docs_delete(doc_id: str, collection: CollectionOpt = None) -> None:
    """Delete a document and every one of its chunks."""
    with _resources() as res:
        name = collection or res.settings.collection
        if res.store.recipe(name) is None or res.store.document(name, doc_id) is None:
            console.print(f"[red]error:[/red] no document {doc_id!r} in {name!r}")
            raise typer.Exit(1)
        removed = res.store.delete_document(name, doc_id)
        console.print(f"deleted {doc_id} ({removed} chunks)")


@app.command()
def stats(collection: CollectionOpt = None, as_json: JsonOpt = False) -> None:
    """Collections, their recipes and sizes (never loads the model)."""
    with _resources() as res:
        current = collection or res.settings.collection
        rows: list[dict[str, Any]] = [
            {
                "collection": summary.name,
                "chunks": summary.chunks,
                "documents": summary.documents,
                "recipe": summary.recipe,
            }
            for summary in summarize_collections(res.store)
        ]
        data = {
            "collection": current,
            "store": res.settings.qdrant_url or f"embedded ({res.settings.qdrant_path})",
            "cache": res.settings.redis_url or f"embedded ({res.settings.redis_dir})",
            "model": res.settings.embedding_model,
            "collections": rows,
        }
        if as_json:
            _emit(data)
            return
        console.print(f"store: {data['store']}\ncache: {data['cache']}\nmodel: {data['model']}")
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
    as_json: JsonOpt = False,
) -> None:
    """nDCG@10 and Recall@100 on a BEIR dataset, through the normal pipeline and search."""
    from ingest.evaluation import evaluate, load_beir

    with _resources() as res:
        sources, queries, qrels = load_beir(dataset, split)
        mode = "whole" if whole_documents else "chunked"
        base = res.base_embedder.recipe
        collection = f"eval-{dataset.name}-{mode}-{base.fingerprint()[:8]}"
        show = not as_json and console.is_terminal
        with RichIngestProgress(len(sources), console, enabled=show) as progress:
            pipeline = res.pipeline(
                collection, progress, whole_documents=whole_documents, instruction=instruction
            )
            res.check_recipe_early(collection, instruction)
            scores, report = evaluate(
                pipeline, res.search_service(collection, instruction), sources, queries, qrels
            )
        if report.errors:
            console.print(
                f"[yellow]{len(report.errors)} corpus documents failed to ingest[/yellow]"
            )
        if as_json:
            _emit(scores)
        else:
            console.print(
                f"{dataset.name} ({mode}): nDCG@10 {scores['ndcg@10']:.2f}  "
                f"Recall@100 {scores['recall@100']:.2f}  over {scores['queries']} queries"
            )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface (QUARRY_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (QUARRY_PORT)")] = None,
) -> None:
    """Run the HTTP API (uvicorn), on the embedded defaults when nothing is configured."""
    import uvicorn

    from app.main import create_app

    try:
        settings = Settings()
    except ValueError as exc:
        console.print(f"[red]error:[/red] invalid settings: {exc}")
        raise typer.Exit(2) from exc
    level = os.environ.get("QUARRY_LOG_LEVEL", "info").lower()
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=level,
        timeout_graceful_shutdown=10,
    )


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
