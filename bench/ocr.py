"""OCR throughput on a scanned PDF, and what OCR costs the searches running beside it.

Prints real SciFact abstracts on N pages, scans them to an image-only PDF (200 dpi, grey),
then parses it through Quarry's parse workers (the server's path): pages per second, and
how many of the printed words OCR got back. Then searches a small collection while the same
scan is parsed, against searching alone: the p50 ratio says whether OCR holds other work.

Then scans of one page in Korean, Chinese and Russian at 150 and 300 dpi: what OCR read
back of them, how sure it was, and with which packs.

    python bench/ocr.py [--pages N] [--workers W] [--no-scripts]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.*, tests.*
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.resources import Resources
from app.settings import Settings
from bench.remote import search_latency
from ingest.sources import TextSource
from tests.ingest.scans import scanned_pdf

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact" / "corpus.jsonl"


def abstracts(count: int) -> list[str]:
    texts = []
    with CORPUS.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            text = record.get("text", "")
            if 1200 <= len(text) <= 2400 and text.isascii():
                texts.append(text)
            if len(texts) == count:
                break
    return texts


def recovered(printed: list[str], read: str) -> float:
    wanted = [w.lower() for text in printed for w in re.findall(r"[A-Za-z]{4,}", text)]
    found = set(re.findall(r"[a-z]{4,}", read.lower()))
    return sum(w in found for w in wanted) / max(len(wanted), 1)


def search_p50(res: Resources, queries: list[str]) -> float:
    return statistics.median(search_latency(res, queries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--no-scripts", action="store_true", help="leave out the Korean/Chinese/Russian pages"
    )
    args = parser.parse_args()
    printed = abstracts(args.pages)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scan = scanned_pdf(folder / "scan.pdf", printed)
        settings = Settings(
            _env_file=None,
            data_dir=folder / "data",
            embedding_model="sentence-transformers/all-MiniLM-L6-v2",
            parse_workers=args.workers,
        )
        res = Resources(settings)
        pool = res.parse_pool
        pool.parse(scanned_pdf(folder / "warm.pdf", printed[:1]), "warm.pdf")  # start workers
        started = time.perf_counter()
        elements = pool.parse(scan, "scan.pdf")
        seconds = time.perf_counter() - started
        text = " ".join(e.text for e in elements)

        sources = [TextSource(f"doc-{i}", t) for i, t in enumerate(abstracts(200))]
        res.pipeline("bench").run(sources)
        # distinct queries for each run: a repeated one is answered from the cache
        queries = [t[:80] for t in abstracts(90)[-85:]]
        search_p50(res, queries[:5])  # warm
        alone = search_p50(res, queries[5:45])
        parsing = threading.Thread(target=pool.parse, args=(scan, "scan.pdf"))
        parsing.start()
        time.sleep(1.0)
        during = search_p50(res, queries[45:])
        parsing.join()
        res.close()
    print(
        f"scanned PDF: {args.pages} pages of SciFact abstracts at 200 dpi, {args.workers} workers"
    )
    print(f"OCR: {args.pages / seconds:.2f} pages/s ({seconds:.1f} s for {args.pages} pages)")
    print(f"printed words (4+ letters) recovered: {100 * recovered(printed, text):.1f}%")
    print(
        f"search p50 alone {1000 * alone:.1f} ms, during OCR {1000 * during:.1f} ms: "
        f"ratio {during / alone:.2f}"
    )
    if not args.no_scripts:
        scripts()


def scripts() -> None:
    """One page each of Korean, Chinese and Russian card terms, as image-only PDFs at 150
    and 300 dpi, parsed with the default settings (eng configured): seconds a page, the
    share of the printed characters (words for Russian) read back, and the confidence."""
    from ingest.parsing import ParseOptions, parse_file
    from tests.ingest.scans import TEXTS, image_only_pdf, printed_page
    from tests.ingest.scans import recovered as read_back

    print("script, dpi: seconds a page, printed read back, mean word confidence, packs")
    with tempfile.TemporaryDirectory() as tmp:
        for script, (text, _) in TEXTS.items():
            for dpi in (150, 300):
                path = image_only_pdf(
                    Path(tmp) / f"{script}{dpi}.pdf", [printed_page(text, script, dpi)], dpi
                )
                started = time.perf_counter()
                elements = parse_file(path, options=ParseOptions())
                seconds = time.perf_counter() - started
                read = " ".join(e.text for e in elements)
                marks = {e.ocr_confidence for e in elements}
                packs = sorted({lang for e in elements for lang in e.languages})
                print(
                    f"{script}, {dpi}: {seconds:.1f} s, {100 * read_back(text, read, script):.0f}%"
                    f", {marks}, {'+'.join(packs)}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
