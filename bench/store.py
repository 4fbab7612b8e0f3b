"""Embedded store at scale: upsert throughput and top-10 latency at 100k x 384-d, dense
(filtered), sparse (BM25) and hybrid (both, fused by RRF).

Vectors are clustered (a mixture of Gaussians around 200 centres), not uniform noise,
so that nearest neighbours mean something and HNSW sees a realistic shape. Chunk texts are
80 words drawn from a Zipf-distributed vocabulary of 20,000, as natural text's word counts
are; queries are 6 such words.

    python bench/store.py [--points 100000] [--dim 384] [--queries 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from retrieval.edge_store import EdgeStore
from retrieval.models import ChunkRecord, CollectionRecipe, SearchPlan, chunk_id
from retrieval.sparse import BM25_SCHEME, Bm25Encoder

VOCABULARY = [f"w{i}x" for i in range(20_000)]


def zipf_words(rng: np.random.Generator, count: int) -> str:
    ranks = np.minimum(rng.zipf(1.1, size=count), len(VOCABULARY)) - 1
    return " ".join(VOCABULARY[r] for r in ranks)


def clustered(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centres), size=n)
    points = centres[picks] + rng.normal(scale=0.35, size=(n, dim)).astype(np.float32)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    centres = rng.normal(size=(200, args.dim)).astype(np.float32)
    docs = max(args.points // 100, 1)

    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeStore(Path(tmp))
        recipe = CollectionRecipe("bench", args.dim, "bench", sparse=BM25_SCHEME)
        store.ensure_collection("bench", recipe)
        bm25 = Bm25Encoder()
        started = time.perf_counter()
        for start in range(0, args.points, args.batch):
            vectors = clustered(rng, min(args.batch, args.points - start), args.dim, centres)
            texts = [zipf_words(rng, 80) for _ in vectors]
            weights = bm25.documents(texts)
            records = []
            for offset, vector in enumerate(vectors):
                i = start + offset
                doc = f"doc-{i % docs}"
                records.append(
                    ChunkRecord(
                        chunk_id(doc, i),
                        vector,
                        {
                            "doc_id": doc,
                            "source": f"source-{i % 50}.pdf",
                            "chunk_index": i,
                            "chunk_count": 100,
                            "text": texts[offset],
                            "meta": {"team": f"t{i % 10}"},
                        },
                        weights[offset],
                    )
                )
            store.upsert("bench", records)
        upsert_s = time.perf_counter() - started
        started = time.perf_counter()
        store.optimize("bench")
        index_s = time.perf_counter() - started

        queries = clustered(rng, args.queries, args.dim, centres)
        results: dict[str, list[float]] = {}
        filters = {
            "no filter": lambda i: None,
            "source= (indexed, 2%)": lambda i: {"source": f"source-{i % 50}.pdf"},
            "doc_id= (indexed, 0.1%)": lambda i: {"doc_id": f"doc-{i % docs}"},
            "metadata key= (10%)": lambda i: {"team": f"t{i % 10}"},
        }
        for label, make in filters.items():
            timings = []
            for i, query in enumerate(queries):
                t0 = time.perf_counter()
                hits = store.search("bench", query[None, :], 10, make(i))[0]
                timings.append(time.perf_counter() - t0)
                assert hits, label
            results[label] = timings
        words = bm25.queries([zipf_words(rng, 6) for _ in queries])
        for mode in ("sparse", "hybrid"):
            plan = SearchPlan(mode)  # type: ignore[arg-type]
            timings = []
            for query, terms in zip(queries, words, strict=True):
                t0 = time.perf_counter()
                store.search("bench", query[None, :], 10, sparse=[terms], plan=plan)
                timings.append(time.perf_counter() - t0)
            results[f"{mode} (no filter)"] = timings
        store.close()

    print(f"embedded store (qdrant-edge), {args.points:,} chunks x {args.dim}-d, clustered")
    rate = args.points / upsert_s
    print(f"upsert: {rate:,.0f} points/s ({upsert_s:.1f} s, batches of {args.batch})")
    print(f"HNSW optimize: {index_s:.1f} s")
    for label, timings in results.items():
        print(
            f"top-10 {label:<24} p50 {percentile_ms(timings, 50):6.2f} ms   "
            f"p99 {percentile_ms(timings, 99):6.2f} ms   ({len(timings)} queries)"
        )
    ratio = percentile_ms(results["hybrid (no filter)"], 50) / percentile_ms(
        results["no filter"], 50
    )
    print(f"hybrid p50 / dense p50: {ratio:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
