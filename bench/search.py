"""The API under load: `quarry serve` with MiniLM on 100k stored chunks, over loopback.

    python bench/search.py [--points 100000] [--seconds 30] [--closed-seconds 15]

(a) open loop at a fixed rate (default 100 requests/s for 30 s): p50 / p99 latency,
    measured from each request's scheduled start (no coordinated omission), for
    repeated queries (embedding cache hits) and for fresh ones (the model runs);
(b) closed loop, 32 clients: the highest QPS for repeated and for fresh queries;
(c) the same closed loop on /v1/embeddings (one fresh text per request), with
    micro-batching on and then off (QUARRY_BATCH_MAX_ITEMS=1, server restarted);
(d) fresh queries at a steady rate while the server is idle, then while it ingests a
    large upload (slices of ../shared/bulk's novel, or generated text): p50 / p99 of both
    and the ratio of the p99s (queries go first at the model: target <= 5x);
(e) open loop on repeated queries (embeddings cached: the store's share shows) in mode
    dense and in mode hybrid (dense + BM25 fused): p50 / p99 and the ratio of the p50s
    (target <= 2x). `--only-modes` runs (e) alone.

The 100k chunks get clustered random vectors written straight into the store (embedding
100k texts on 2 CPU cores would take most of an hour and does not change search cost).
The load generator is a minimal keep-alive HTTP/1.1 client on asyncio, so that the
client's own overhead stays small beside the server's on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from app.settings import Settings  # noqa: E402
from embedding.model_source import resolve_model  # noqa: E402
from retrieval.edge_store import EdgeStore  # noqa: E402
from retrieval.models import ChunkRecord, CollectionRecipe, chunk_id  # noqa: E402
from retrieval.sparse import BM25_SCHEME, Bm25Encoder  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
COLLECTION = "bench"
_VOCABULARY = """river mountain glacier copper violin harbor lantern meadow falcon quartz orchard
thunder compass saffron tundra beacon marble willow ember canyon prairie cobalt lagoon summit
velvet nectar basalt juniper cedar monsoon protein enzyme receptor theorem bridge engine"""
WORDS = _VOCABULARY.split()


def populate(data_dir: Path, points: int, dim: int) -> None:
    source = resolve_model(MODEL)
    recipe = CollectionRecipe(
        source.model_id, dim, Settings(_env_file=None).query_instruction, sparse=BM25_SCHEME
    )
    bm25 = Bm25Encoder()
    rng = np.random.default_rng(42)
    centres = rng.normal(size=(200, dim)).astype(np.float32)
    words = np.array(WORDS)
    store = EdgeStore(data_dir / "qdrant")
    store.ensure_collection(COLLECTION, recipe)
    for start in range(0, points, 2000):
        n = min(2000, points - start)
        vectors = centres[rng.integers(0, 200, n)] + rng.normal(scale=0.35, size=(n, dim))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = []
        texts = [" ".join(words[rng.integers(0, len(words), 60)]) for _ in range(n)]
        weights = bm25.documents(texts)
        for offset in range(n):
            i = start + offset
            doc = f"doc-{i // 50:05d}"
            text = texts[offset]
            payload = {
                "doc_id": doc,
                "source": f"{doc}.pdf",
                "chunk_index": i % 50,
                "chunk_count": 50,
                "text": text,
                "page": 1 + (i % 50) // 5,
                "meta": {"team": f"t{i % 10}"},
            }
            records.append(
                ChunkRecord(chunk_id(doc, i % 50), vectors[offset], payload, weights[offset])
            )
        store.upsert(COLLECTION, records)
    store.optimize(COLLECTION)
    store.close()


class Server:
    def __init__(self, data_dir: Path, extra_env: dict[str, str]) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUARRY_")}
        env |= {
            "QUARRY_DATA_DIR": str(data_dir),
            "QUARRY_EMBEDDING_MODEL": MODEL,
            "QUARRY_COLLECTION": COLLECTION,
            "QUARRY_LOG_LEVEL": "warning",
            "HF_HUB_OFFLINE": "1",
            **extra_env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)], env=env
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz") as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("the server did not become ready")
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


class Connection:
    """One keep-alive HTTP/1.1 connection; requests on it run one at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        try:
            return await self._post(path, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closed an idle keep-alive connection: reconnect and resend once.
            self.writer = None
            return await self._post(path, body)

    async def _post(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length")
        )
        await self.reader.readexactly(length)
        return status


class Pool:
    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[Connection] = []

    async def post(self, path: str, body: bytes) -> int:
        conn = self.idle.pop() if self.idle else Connection(self.port)
        try:
            return await conn.post(path, body)
        finally:
            self.idle.append(conn)


def search_body(query: str, mode: str | None = None) -> bytes:
    body: dict[str, object] = {"query": query, "top_k": 10}
    if mode:
        body["mode"] = mode
    return json.dumps(body).encode()


def fresh_queries() -> Callable[[], str]:
    counter = itertools.count()
    rng = random.Random()
    return lambda: f"{' '.join(rng.choices(WORDS, k=8))} {next(counter)}"


def repeated_queries(pool_size: int = 20) -> tuple[list[str], Callable[[], str]]:
    pairs = list(itertools.pairwise(WORDS))[:pool_size]
    queries = [f"how does the {w} relate to the {v}" for w, v in pairs]
    cycle = itertools.cycle(queries)
    return queries, lambda: next(cycle)


async def open_loop(
    port: int, make: Callable[[], str], rate: float, seconds: float, mode: str | None = None
) -> dict:
    pool = Pool(port)
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def one(at: float, body: bytes) -> None:
        nonlocal errors
        await asyncio.sleep(max(at - loop.time(), 0))
        status = await pool.post("/v1/search", body)
        latencies.append(loop.time() - at)
        errors += status != 200

    tasks = [
        asyncio.create_task(one(start + i / rate, search_body(make(), mode)))
        for i in range(int(rate * seconds))
    ]
    await asyncio.gather(*tasks)
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


async def closed_loop(
    port: int, path: str, make_body: Callable[[], bytes], clients: int, seconds: float
) -> dict:
    done = 0
    errors = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def client() -> None:
        nonlocal done, errors
        conn = Connection(port)
        while loop.time() < end:
            status = await conn.post(path, make_body())
            done += 1
            errors += status != 200

    started = loop.time()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = loop.time() - started
    return {"requests": done, "errors": errors, "qps": round(done / elapsed, 1)}


def embed_body_maker(run: str) -> Callable[[], bytes]:
    """One never-seen text per request (`run` keeps runs apart: no cache hits)."""
    make = fresh_queries()
    return lambda: json.dumps(
        {"model": MODEL, "input": [f"{run} {make()} {make()}"], "encoding_format": "base64"}
    ).encode()


def embeddings_load(server: Server, run: str, args: argparse.Namespace) -> dict:
    """Closed loop on /v1/embeddings, one fresh text per request."""
    result = asyncio.run(
        closed_loop(
            server.port, "/v1/embeddings", embed_body_maker(run), args.clients, args.closed_seconds
        )
    )
    print(f"embeddings_batching_{run}", result, flush=True)
    return result


async def warm(port: int, queries: list[str]) -> None:
    pool = Pool(port)
    for query in queries:
        assert await pool.post("/v1/search", search_body(query)) == 200


def modes_latency(port: int, repeated: Callable[[], str], args: argparse.Namespace) -> dict:
    """(e): the same cached queries searched dense, then hybrid."""
    results = {}
    for mode in ("dense", "hybrid"):
        key = f"modes_{mode}"
        results[key] = asyncio.run(open_loop(port, repeated, args.rate, args.seconds, mode))
        print(key, results[key], flush=True)
    dense, hybrid = results["modes_dense"], results["modes_hybrid"]
    ratio = hybrid["p50_ms"] / max(dense["p50_ms"], 1e-9)
    print(
        f"repeated queries at {args.rate:.0f} req/s, {args.points:,} chunks: dense p50 "
        f"{dense['p50_ms']:.2f} p99 {dense['p99_ms']:.2f} ms; hybrid p50 {hybrid['p50_ms']:.2f} "
        f"p99 {hybrid['p99_ms']:.2f} ms; hybrid p50 / dense p50 {ratio:.2f}x (target <= 2x)",
        flush=True,
    )
    return results


def ingest_corpus(folder: Path, files: int) -> list[Path]:
    """Slices of the bulk novel when ../shared is there, else generated text of that size."""
    folder.mkdir(parents=True, exist_ok=True)
    novel = Path(__file__).resolve().parents[2] / "shared" / "bulk" / "book-war-and-peace-1225p.txt"
    if novel.exists():
        text = novel.read_text(encoding="utf-8", errors="replace")
    else:
        rng = random.Random(5)
        text = "\n\n".join(" ".join(rng.choices(WORDS, k=80)) for _ in range(20_000))
    step = len(text) // files
    paths = []
    for index in range(files):
        path = folder / f"slice-{index:03d}.txt"
        path.write_text(text[index * step : (index + 1) * step], encoding="utf-8")
        paths.append(path)
    return paths


def upload_job(port: int, paths: list[Path]) -> str:
    boundary = "benchboundary"
    parts = []
    for path in paths:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{path.name}"\r\nContent-Type: text/plain\r\n\r\n'.encode()
            + path.read_bytes()
            + b"\r\n"
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="collection"\r\n\r\n'
        "ingest\r\n".encode()
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/documents",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=300) as reply:
        return str(json.loads(reply.read())["job_id"])


def job_state(port: int, job_id: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/jobs/{job_id}") as reply:
        return dict(json.loads(reply.read()))


def search_during_ingest(server: Server, args: argparse.Namespace, tmp: Path) -> dict:
    """(d): the same open loop of fresh queries, idle and then during a large ingest."""
    rate, seconds = args.ingest_rate, args.ingest_seconds
    idle = asyncio.run(open_loop(server.port, fresh_queries(), rate, seconds))
    print("search_idle", idle, flush=True)
    job_id = upload_job(server.port, ingest_corpus(tmp / "ingest", args.ingest_files))
    deadline = time.monotonic() + 300
    while job_state(server.port, job_id)["progress"]["embedded"] == 0:  # the model is busy
        if time.monotonic() > deadline:
            raise SystemExit("the ingest never reached the model")
        time.sleep(0.2)
    busy = asyncio.run(open_loop(server.port, fresh_queries(), rate, seconds))
    job = job_state(server.port, job_id)
    busy["ingest_still_running"] = job["state"] == "running"
    busy["ingest_chunks_embedded"] = job["progress"]["embedded"]
    print("search_during_ingest", busy, flush=True)
    return {"idle": idle, "ingest": busy, "p99_ratio": round(busy["p99_ms"] / idle["p99_ms"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--closed-seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--ingest-rate", type=float, default=10.0)
    parser.add_argument("--ingest-seconds", type=float, default=30.0)
    parser.add_argument("--ingest-files", type=int, default=120)
    parser.add_argument("--only-ingest", action="store_true", help="run (d) alone")
    parser.add_argument("--only-modes", action="store_true", help="run (e) alone")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        populate(data_dir, args.points, 384)
        print(f"stored {args.points:,} chunks in {time.perf_counter() - started:.0f} s", flush=True)

        server = Server(data_dir, {})
        try:
            queries, repeated = repeated_queries()
            asyncio.run(warm(server.port, queries))
            if not args.only_ingest:
                results |= modes_latency(server.port, repeated, args)
            if args.only_modes:
                return
            results["search_ingest"] = search_during_ingest(server, args, data_dir)
            if args.only_ingest:
                print(json.dumps(results))
                return
            fresh = fresh_queries()
            for label, make in (("repeated", repeated), ("fresh", fresh)):
                key = f"open_loop_{label}"
                results[key] = asyncio.run(open_loop(server.port, make, args.rate, args.seconds))
                print(key, results[key], flush=True)
            for label, make in (("repeated", repeated), ("fresh", fresh)):
                key = f"closed_loop_{label}"
                results[key] = asyncio.run(
                    closed_loop(
                        server.port,
                        "/v1/search",
                        lambda make=make: search_body(make()),
                        args.clients,
                        args.closed_seconds,
                    )
                )
                print(key, results[key], flush=True)
            results["embeddings_batching_on"] = embeddings_load(server, "on", args)
        finally:
            server.stop()
        server = Server(data_dir, {"QUARRY_BATCH_MAX_ITEMS": "1"})
        try:
            results["embeddings_batching_off"] = embeddings_load(server, "off", args)
        finally:
            server.stop()

    on = results["embeddings_batching_on"]["qps"]
    off = results["embeddings_batching_off"]["qps"]
    print()
    print(f"API over loopback, MiniLM (CPU), {args.points:,} stored chunks, top_k=10")
    for label in ("repeated", "fresh"):
        row = results[f"open_loop_{label}"]
        print(
            f"open loop {args.rate:.0f} req/s x {args.seconds:.0f} s, {label:<8} queries: "
            f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
            f"({row['requests']} requests, {row['errors']} errors)"
        )
    for label in ("repeated", "fresh"):
        row = results[f"closed_loop_{label}"]
        print(
            f"closed loop {args.clients} clients, {label:<8} queries: {row['qps']:8.1f} QPS "
            f"({row['errors']} errors)"
        )
    print(
        f"/v1/embeddings, {args.clients} clients: batching on {on:.1f} req/s, off {off:.1f} "
        f"req/s, ratio {on / max(off, 1e-9):.2f}x"
    )
    both = results["search_ingest"]
    print(
        f"fresh queries at {args.ingest_rate:.0f} req/s: idle p50 {both['idle']['p50_ms']:.1f} "
        f"p99 {both['idle']['p99_ms']:.1f} ms; during ingest p50 {both['ingest']['p50_ms']:.1f} "
        f"p99 {both['ingest']['p99_ms']:.1f} ms; p99 ratio {both['p99_ratio']:.2f}x"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
