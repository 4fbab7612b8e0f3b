"""The HTTP path's cost: ingest and search through one remote embedding server vs in-process.

Starts one `quarry serve --embeddings-only` process on this machine, then ingests the same
documents (default: ../shared/eval/scifact) into fresh data dirs, alternating the
in-process model and the remote one, and times searches through each. The same model runs
in both; only the path to it differs. One run, one machine.

    python bench/remote.py [PATH] [--limit N] [--rounds R] [--queries Q]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx

from app.resources import Resources
from app.settings import Settings
from ingest.evaluation import load_beir
from ingest.sources import FileSource, Source, expand_paths

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact"


def load(path: Path, limit: int | None) -> tuple[list[Source], list[str]]:
    if (path / "corpus.jsonl").is_file():
        corpus, queries, _ = load_beir(path, "test")
        sources: list[Source] = list(corpus)
        texts = list(queries.values())
    else:
        files, _ = expand_paths([str(path)])
        sources = [FileSource(f, key) for f, key in files]
        texts = [f"what does {key} say" for _, key in files]
    return (sources[:limit] if limit else sources), texts


@contextmanager
def embedding_server(model: str, folder: Path) -> Iterator[str]:
    """A `quarry serve --embeddings-only` process; yields its /v1 URL once it is ready."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUARRY_")}
    env |= {"QUARRY_EMBEDDING_MODEL": model, "QUARRY_DATA_DIR": str(folder)}
    env["QUARRY_LOG_LEVEL"] = "warning"
    command = [sys.executable, "-m", "app.cli", "serve", "--embeddings-only", "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the embedding server did not start")
            time.sleep(0.2)
        yield url + "/v1"
    finally:
        process.terminate()
        process.wait(30)


def ingest(settings: Settings, sources: list[Source]) -> tuple[float, int, Resources]:
    resources = Resources(settings)
    resources.base_embedder.embed_documents(["warm-up"])  # model or connection, untimed
    started = time.perf_counter()
    report = resources.pipeline("bench").run(sources)
    return time.perf_counter() - started, report.chunks, resources


def search_latency(resources: Resources, queries: list[str]) -> list[float]:
    service = resources.search_service("bench")
    times = []
    for query in queries:
        started = time.perf_counter()
        service.search("bench", query, top_k=10)
        times.append(time.perf_counter() - started)
    return times


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--limit", type=int, default=1000, help="only the first N documents")
    parser.add_argument("--rounds", type=int, default=2, help="local/remote pairs to run")
    parser.add_argument("--queries", type=int, default=100, help="searches timed per path")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    args = parser.parse_args()
    sources, queries = load(args.path, args.limit)

    ratios, lines = [], []
    with tempfile.TemporaryDirectory() as tmp, embedding_server(args.model, Path(tmp)) as url:
        latency: dict[str, list[float]] = {"local": [], "remote": []}
        for round_ in range(args.rounds):
            rates = {}
            for path in ("local", "remote"):
                settings = Settings(
                    _env_file=None,
                    data_dir=Path(tmp) / f"{path}-{round_}",
                    embedding_model=args.model,
                    embedding_urls=url if path == "remote" else "",
                )
                seconds, chunks, resources = ingest(settings, sources)
                # Fresh queries each round: the cache must not answer them.
                picked = queries[round_ * args.queries : (round_ + 1) * args.queries]
                latency[path] += search_latency(resources, picked)
                resources.close()
                rates[path] = chunks / seconds
                lines.append(
                    f"round {round_ + 1} {path:>6}: {chunks} chunks in {seconds:.1f} s "
                    f"= {rates[path]:,.1f} chunks/s"
                )
            ratios.append(rates["remote"] / rates["local"])
            lines.append(f"round {round_ + 1} ratio remote / in-process: {ratios[-1]:.3f}")

    print(f"input: {args.path} ({len(sources)} documents), model: {args.model}")
    print("\n".join(lines))
    print(f"ingest throughput ratio remote / in-process (median): {statistics.median(ratios):.3f}")
    for path, times in latency.items():
        print(
            f"search latency {path:>6} ({len(times)} queries): p50 "
            f"{1000 * percentile(times, 0.5):.1f} ms, p95 {1000 * percentile(times, 0.95):.1f} ms"
        )


if __name__ == "__main__":
    main()
