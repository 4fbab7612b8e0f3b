"""BM25 analysers compared per language: how each scheme ranks a topic's page for its summary.

The sets come from the GNOME user help (Debian's `gnome-user-docs`, translated into ~40
languages): each page's one-line summary (`<desc>`) is a question whose only relevant
passage is the page's body. The summary says in other words and other inflections what the
page says, which is where an analyser's stemming shows (a verbatim span, as in
`bench/languages.py`, matches whatever the analyser). Each scheme's collection is built in
the embedded store and searched `sparse`, as Quarry searches it; nDCG@10.

    python bench/analysers.py [--langs C,de,ru,uk,sr,el,fa,hi,fr,es,fi,hu]
"""

from __future__ import annotations

import argparse
import html
import math
import re
import sys
import tempfile
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.languages import gnome_help
from retrieval.edge_store import EdgeStore
from retrieval.models import ChunkRecord, CollectionRecipe, SearchPlan, chunk_id
from retrieval.sparse import BM25_SCHEME, ENGLISH_ONLY_SCHEME, Bm25Encoder


def _text(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def summaries(language: str) -> list[tuple[str, str]]:
    """(summary, page body) for each page of the help in `language`."""
    found = []
    for page in sorted((gnome_help() / language / "gnome-help").glob("*.page")):
        markup = page.read_text(encoding="utf-8")
        desc = re.search(r"<desc>(.*?)</desc>", markup, re.S)
        body = re.sub(r"<info>.*?</info>", " ", markup, flags=re.S)
        parts = re.findall(r"<(p|title|item)[^>]*>(.*?)</\1>", body, re.S)
        text = " ".join(_text(part) for _, part in parts)
        if desc and len(text) > 100 and len(_text(desc.group(1)).split()) >= 3:
            found.append((_text(desc.group(1)), text))
    return found


def ndcg(pairs: list[tuple[str, str]], scheme: str, folder: Path) -> float:
    bm25 = Bm25Encoder(scheme)
    store = EdgeStore(folder)
    try:
        store.ensure_collection("c", CollectionRecipe("bench", 4, "", sparse=scheme))
        filler = np.array([1.0, 0, 0, 0], dtype=np.float32)
        bodies = [body for _, body in pairs]
        store.upsert(
            "c",
            [
                ChunkRecord(chunk_id(f"p{i}", 0), filler, {"doc_id": f"p{i}", "text": b}, w)
                for i, (b, w) in enumerate(zip(bodies, bm25.documents(bodies), strict=True))
            ],
        )
        asked = bm25.queries([question for question, _ in pairs])
        hits = store.search("c", None, 10, sparse=asked, plan=SearchPlan("sparse"))
    finally:
        store.close()
    gains = []
    for i, found in enumerate(hits):
        ranks = [r for r, hit in enumerate(found) if hit.doc_id == f"p{i}"]
        gains.append(1 / math.log2(ranks[0] + 2) if ranks else 0.0)
    return 100 * sum(gains) / len(gains)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--langs", default="C,de,ru,uk,sr,el,fa,hi,fr,es,fi,hu")
    args = parser.parse_args()
    print("sparse nDCG@10 per BM25 scheme (summary -> its page)")
    print("lang   pages  english-only  current  change")
    with tempfile.TemporaryDirectory() as name:
        for language in args.langs.split(","):
            pairs = summaries(language)
            before = ndcg(pairs, ENGLISH_ONLY_SCHEME, Path(name) / f"{language}-old")
            after = ndcg(pairs, BM25_SCHEME, Path(name) / f"{language}-new")
            print(
                f"{language:<6} {len(pairs):>5} {before:>13.2f} {after:>8.2f} "
                f"{after - before:>+7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
