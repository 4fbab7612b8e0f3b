"""Pipeline throughput against raw `SentenceTransformer.encode` on the same chunk texts.

Ingests a BEIR corpus.jsonl (default: ../shared/eval/scifact) or a folder of documents with
all-MiniLM-L6-v2 into a fresh data dir, then encodes the very same chunk texts with plain
`SentenceTransformer.encode`, then re-ingests the unchanged input. One run, one machine.

    python bench/ingest.py [PATH] [--limit N]
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.resources import Resources
from app.settings import Settings
from ingest.evaluation import load_beir
from ingest.sources import FileSource, Source, expand_paths

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact"


def load_sources(path: Path, limit: int | None) -> list[Source]:
    sources: list[Source]
    if (path / "corpus.jsonl").is_file():
        sources = list(load_beir(path, "test")[0])
    else:
        files, _ = expand_paths([str(path)])
        sources = [FileSource(f) for f in files]
    return sources[:limit] if limit else sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    args = parser.parse_args()
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
