"""`bench/ingest.py --served`: the path `make run` users meet, beside the in-process
pipeline and LlamaIndex's, on the same files and model, in one run."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from app.resources import Resources
from app.settings import Settings
from bench.process_use import CpuUse, tree_memory
from ingest.evaluation import load_beir
from ingest.models import IngestReport
from ingest.sources import FileSource, Source, TextSource, expand_paths


def upload(url: str, paths: list[Path], collection: str) -> str:
    import httpx

    files = [("files", (p.name, p.read_bytes())) for p in paths]
    response = httpx.post(
        f"{url}/v1/documents", files=files, data={"collection": collection}, timeout=600
    )
    response.raise_for_status()
    return str(response.json()["job_id"])


def as_files(path: Path, limit: int | None, into: Path) -> list[Path]:
    """The documents as files: a BEIR corpus one .txt per abstract, or a folder's files."""
    if not (path / "corpus.jsonl").is_file():
        files, _ = expand_paths([str(path)])
        return [f for f, _ in files][: limit or None]
    into.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in load_beir(path, "test")[0][: limit or None]:
        target = into / f"{source.name.replace('/', '-')}.txt"
        target.write_text(source.text, encoding="utf-8")
        paths.append(target)
    return paths


ModelUse = tuple[float, float, float]  # forward batches, tokens, seconds in the model


def _model_use(stats: object) -> ModelUse:
    return (
        float(getattr(stats, "batches", 0)),
        float(getattr(stats, "tokens", 0)),
        float(getattr(stats, "seconds", 0.0)),
    )


def _used(before: ModelUse, after: ModelUse) -> str:
    """What the model did; its seconds add up every lane's (`embedding/lanes.py`)."""
    batches, tokens, seconds = (b - a for a, b in zip(before, after, strict=True))
    rate = tokens / seconds if seconds else 0.0
    return (
        f"model: {batches:.0f} batches, {tokens:.0f} tokens, {seconds:.1f} lane-s "
        f"({rate:.0f} tokens/lane-s)"
    )


def _served_model_use(url: str) -> ModelUse:
    """The server's model counters, from its /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    batches, tokens, seconds = (
        values.get(f"quarry_embedding_{name}_total", 0.0)
        for name in ("batches", "tokens", "seconds")
    )
    return batches, tokens, seconds


@dataclass(frozen=True)
class Engine:
    """QUARRY_CPU_BACKEND and QUARRY_QUANTIZE, the same on every path measured."""

    backend: str
    quantize: str

    def env(self) -> dict[str, str]:
        return {"QUARRY_CPU_BACKEND": self.backend, "QUARRY_QUANTIZE": self.quantize}


def _pipeline_run(
    data_dir: Path, model: str, warm: Path, sources: list[Source], engine: Engine
) -> tuple[float, IngestReport, str]:
    """Seconds of one in-process pipeline run over `sources`, in a fresh data dir (its
    Redis cache empty: every chunk is embedded), after a one-file warm-up, and what the
    model did meanwhile."""
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        embedding_model=model,
        cpu_backend=engine.backend,
        quantize=engine.quantize,
    )
    resources = Resources(settings)
    try:
        resources.pipeline("warm").run([FileSource(warm, "warm")])
        before = _model_use(getattr(resources.base_embedder, "stats", None))
        cpu = CpuUse(os.getpid())
        started = time.perf_counter()
        report = resources.pipeline("bench").run(sources)
        seconds = time.perf_counter() - started
        after = _model_use(getattr(resources.base_embedder, "stats", None))
        return seconds, report, f"{_used(before, after)}; {cpu.stop(seconds)}"
    finally:
        resources.close()


def compare_served(path: Path, limit: int | None, model: str, engine: Engine, peer: bool) -> None:
    from tests.servers import Process, quarry_env, wait_job

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        paths = as_files(path, limit, tmp / "files")
        print(f"input: {path} -> {len(paths)} files; model {model} on {engine}", flush=True)
        texts: list[Source] = [
            TextSource(p.name, p.read_text(encoding="utf-8", errors="replace")) for p in paths
        ]
        texts_s, _, texts_model = _pipeline_run(tmp / "texts", model, paths[0], texts, engine)
        inproc_s, report, inproc_model = _pipeline_run(
            tmp / "files", model, paths[0], [FileSource(p, p.name) for p in paths], engine
        )
        env = quarry_env(tmp / "served", model, "", **engine.env())
        env.pop("QUARRY_REDIS_URL")  # `make run`: the embedded Redis
        env.pop("QUARRY_WORKERS", None)
        server = Process("serve", env, tmp / "serve.log")
        server.start()
        try:
            time.sleep(5)  # ready (the model is loaded), at rest, before any upload
            assert server.process is not None
            procs, pss, rss = tree_memory(server.process.pid)
            wait_job(server.url, upload(server.url, paths[:1], "warm"), timeout=600)
            before = _served_model_use(server.url)
            cpu = CpuUse(server.process.pid)
            started = time.perf_counter()
            # Watched once a second, as a person would: a poller asking five times a second
            # for a job of a thousand files takes a share of two cores that the in-process
            # pipeline never pays.
            job = wait_job(
                server.url, upload(server.url, paths, "bench"), timeout=7200, every_s=1.0
            )
            served_s = time.perf_counter() - started
            served_model = f"{_used(before, _served_model_use(server.url))}; {cpu.stop(served_s)}"
        finally:
            server.stop()
        if peer:  # after Quarry's runs, alone on the machine as they were
            from bench.peer import llamaindex_ingest

            theirs = llamaindex_ingest(paths, Path(model))
    chunks = report.chunks
    stored = job["progress"]["stored"]
    rate_in, rate_served = len(paths) / inproc_s, len(paths) / served_s
    print(
        f"in-process pipeline, texts (no parsing): {texts_s:.1f} s, "
        f"{len(paths) / texts_s:.2f} docs/s; {texts_model}\n"
        f"in-process pipeline, files (parsed, fresh data dir): {inproc_s:.1f} s, "
        f"{rate_in:.2f} docs/s, "
        f"{chunks / inproc_s:.1f} chunks/s ({report.ingested} ingested); {inproc_model}\n"
        f"quarry serve, one upload: {served_s:.1f} s, {rate_served:.2f} docs/s, "
        f"{stored / served_s:.1f} chunks/s ({job['progress']['files_by_status']}); "
        f"{served_model}\n"
        f"served / in-process files: {rate_served / rate_in:.3f}\n"
        f"served / in-process texts: {texts_s / served_s:.3f}\n"
        f"quarry serve at rest: {procs} processes, PSS {pss:.0f} MB, RSS summed {rss:.0f} MB"
    )
    if peer:
        rate_peer = theirs["documents"] / theirs["seconds"]
        print(
            f"LlamaIndex IngestionPipeline (SentenceSplitter 256/32, HuggingFaceEmbedding, "
            f"Qdrant local): {theirs['seconds']:.1f} s, {rate_peer:.2f} docs/s, "
            f"{theirs['nodes'] / theirs['seconds']:.1f} nodes/s ({theirs['nodes']:.0f} nodes)\n"
            f"quarry serve / LlamaIndex: {rate_served / rate_peer:.2f}x; "
            f"in-process files / LlamaIndex: {rate_in / rate_peer:.2f}x"
        )
