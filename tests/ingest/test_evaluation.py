"""BEIR evaluation through the normal pipeline, on a small dataset written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.resources import Resources
from ingest.evaluation import evaluate, load_beir, score_run

DOCS = {
    "d1": ("Volcanoes", "Lava and ash erupt from volcanoes such as Etna."),
    "d2": ("Bread", "Sourdough bread needs a starter and a long proof."),
    "d3": ("Chess", "The Sicilian Defence answers 1.e4 with c5."),
    "d4": ("Tides", "The moon's gravity drives ocean tides twice a day."),
}
QUERIES = {
    "q1": ("eruption of lava", "d1"),
    "q2": ("baking with a starter", "d2"),
    "q3": ("chess opening for black", "d3"),
}


def write_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for doc_id, (title, text) in DOCS.items():
            out.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for query_id, (text, _) in QUERIES.items():
            out.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, (_, d) in QUERIES.items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return folder


def test_score_run_matches_trec_definitions() -> None:
    qrels = {"q": {"a": 1, "b": 1}}
    perfect = score_run(qrels, {"q": {"a": 0.9, "b": 0.8, "c": 0.1}})
    assert perfect["ndcg@10"] == 100.0 and perfect["recall@100"] == 100.0
    half = score_run(qrels, {"q": {"c": 0.9, "a": 0.8}})
    assert 0 < half["ndcg@10"] < 100 and half["recall@100"] == 50.0


@pytest.mark.parametrize("whole", [True, False])
def test_small_dataset_end_to_end(resources: Resources, tmp_path: Path, whole: bool) -> None:
    sources, queries, qrels = load_beir(write_beir(tmp_path / "mini"), "test")
    assert (
        len(sources) == 4
        and sources[0].text == "Volcanoes Lava and ash erupt from volcanoes such as Etna."
    )
    pipeline = resources.pipeline("eval-mini", whole_documents=whole)
    scores, report = evaluate(
        pipeline, lambda: resources.search_service("eval-mini"), sources, queries, qrels
    )
    assert report.ingested == 4 and scores["queries"] == 3
    assert scores["ndcg@10"] == 100.0 and scores["recall@100"] == 100.0
