"""Retrieval quality on a BEIR dataset, through the normal ingest and search paths."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytrec_eval

from embedding.errors import InvalidInputError
from ingest.models import IngestReport
from ingest.pipeline import IngestPipeline
from ingest.sources import TextSource
from retrieval.search import SearchService

QUERY_BATCH = 64
CHUNK_DEPTH = 1000  # chunks fetched per query before folding them into documents


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def load_beir(
    dataset: Path, split: str
) -> tuple[list[TextSource], dict[str, str], dict[str, dict[str, int]]]:
    """Corpus sources (`title + " " + text`), the split's queries, and its qrels."""
    needed = [
        dataset / "corpus.jsonl",
        dataset / "queries.jsonl",
        dataset / "qrels" / f"{split}.tsv",
    ]
    for path in needed:
        if not path.is_file():
            raise InvalidInputError(f"{path}: missing (a BEIR dataset folder needs it)")
    qrels: dict[str, dict[str, int]] = {}
    with needed[2].open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    listed = {str(q["_id"]): str(q["text"]) for q in _jsonl(needed[1])}
    queries = {qid: text for qid, text in listed.items() if qid in qrels}
    if not queries:
        raise InvalidInputError(
            f"{dataset}: none of the {len(qrels)} questions judged in qrels/{split}.tsv is in "
            "queries.jsonl: nothing to score (check the split and the query ids)",
            detail={"field": "dataset", "qrels_queries": len(qrels), "queries": len(listed)},
        )
    sources = [
        TextSource(
            display=f"{dataset.name}/{doc['_id']}",
            text=f"{doc.get('title', '')} {doc.get('text', '')}".strip(),
            metadata={"beir_id": str(doc["_id"])},
        )
        for doc in _jsonl(needed[0])
    ]
    return sources, queries, qrels


def score_run(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> dict[str, float]:
    """nDCG@10 and Recall@100 in percent, with trec_eval's own definitions, averaged over
    the queries that were run (judgements of questions never asked are not zeros; their
    count is reported as `qrels_without_query`)."""
    asked = [q for q in qrels if q in run]
    judged = {q: qrels[q] for q in asked}
    evaluator = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.100"})
    per_query = evaluator.evaluate(run)
    count = max(len(asked), 1)
    ndcg = sum(per_query.get(q, {}).get("ndcg_cut_10", 0.0) for q in asked) / count
    recall = sum(per_query.get(q, {}).get("recall_100", 0.0) for q in asked) / count
    return {
        "ndcg@10": round(100 * ndcg, 2),
        "recall@100": round(100 * recall, 2),
        "queries": len(asked),
        "qrels_without_query": len(qrels) - len(asked),
    }


def evaluate(
    pipeline: IngestPipeline,
    search_service: Callable[[], SearchService],
    sources: list[TextSource],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    instruction: str | None = None,
    mode: str | None = None,
    prepare: Callable[[], object] = lambda: None,
    vectors: str | None = None,
) -> tuple[dict[str, Any], IngestReport]:
    """Ingest the corpus, run every query in `mode` (the collection's default when None),
    fold chunk hits to documents (best chunk wins). `prepare` runs between the two."""
    report = pipeline.run(sources)
    prepare()
    search = search_service()
    plan = search.plan(mode, vectors=vectors)
    collection = pipeline.config.collection
    ids = list(queries)
    run: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for start in range(0, len(ids), QUERY_BATCH):
        batch = ids[start : start + QUERY_BATCH]
        results = search.search_many(
            collection,
            [queries[q] for q in batch],
            top_k=CHUNK_DEPTH,
            instruction=instruction,
            plan=plan,
        )
        for query_id, result in zip(batch, results, strict=True):
            docs: dict[str, float] = {}
            for hit in result.hits:
                beir_id = str(hit.metadata.get("beir_id", hit.doc_id))
                docs[beir_id] = max(docs.get(beir_id, -1.0), hit.score)
            run[query_id] = docs
    per_query = 1000 * (time.perf_counter() - started) / max(len(ids), 1)
    described = {"mode": plan.mode, "vectors": plan.vectors, "ms_per_query": round(per_query, 2)}
    return score_run(qrels, run) | described, report
