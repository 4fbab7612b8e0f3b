"""BEIR evaluation through the normal pipeline, on a small dataset written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.resources import Resources
from embedding.errors import InvalidInputError
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


def test_only_the_questions_run_are_scored() -> None:
    """A qrels file that judges questions the queries file lacks: those are not zeros."""
    qrels = {"q": {"a": 1}, "never-asked": {"b": 1}, "nor-this": {"c": 1}}
    scores = score_run(qrels, {"q": {"a": 0.9}})
    assert scores["ndcg@10"] == 100.0 and scores["queries"] == 1
    assert scores["qrels_without_query"] == 2


def test_a_set_whose_qrels_match_no_query_is_refused(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nzz\td1\t1\n")
    with pytest.raises(InvalidInputError, match="none of the 1 questions"):
        load_beir(folder, "test")


def test_extra_judgements_do_not_lower_the_score(resources: Resources, tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "mini")
    with (folder / "qrels" / "test.tsv").open("a") as out:
        out.writelines(f"extra{i}\td4\t1\n" for i in range(30))
    sources, queries, qrels = load_beir(folder, "test")
    scores, _ = evaluate(
        resources.pipeline("eval-extra"),
        lambda: resources.search_service("eval-extra"),
        sources,
        queries,
        qrels,
    )
    assert scores["queries"] == 3 and scores["qrels_without_query"] == 30
    assert scores["ndcg@10"] == 100.0


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


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_every_mode_reports_the_same_shape(resources: Resources, tmp_path: Path, mode: str) -> None:
    sources, queries, qrels = load_beir(write_beir(tmp_path / "mini"), "test")
    pipeline = resources.pipeline("eval-modes")
    scores, _ = evaluate(
        pipeline, lambda: resources.search_service("eval-modes"), sources, queries, qrels, mode=mode
    )
    assert set(scores) == {
        "ndcg@10",
        "recall@100",
        "queries",
        "qrels_without_query",
        "mode",
        "vectors",
        "ms_per_query",
    }
    assert scores["mode"] == mode and scores["queries"] == 3 and scores["ms_per_query"] > 0
    assert scores["ndcg@10"] == 100.0  # each query shares words and meaning with its doc


def test_two_stage_matryoshka_with_a_qwen3_model(
    tmp_path: Path, tiny_qwen: Path, redis_process: object
) -> None:
    from app.settings import Settings

    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        embedding_model=str(tiny_qwen),
        redis_url=redis_process.url,  # type: ignore[attr-defined]
        small_dim=32,
    )
    resources = Resources(settings)
    try:
        sources, queries, qrels = load_beir(write_beir(tmp_path / "mini"), "test")
        pipeline = resources.pipeline("two-stage")
        results = {}
        for vectors in ("full", "small", "two-stage"):
            results[vectors], _ = evaluate(
                pipeline,
                lambda: resources.search_service("two-stage"),
                sources,
                queries,
                qrels,
                mode="dense",
                vectors=vectors,
            )
        recipe = resources.store.recipe("two-stage")
        assert recipe is not None and recipe.small_dim == 32 and recipe.dimension == 64
        assert {r["vectors"] for r in results.values()} == {"full", "small", "two-stage"}
        # With every document a candidate, two-stage ranks exactly as the full vector.
        assert results["two-stage"]["ndcg@10"] == results["full"]["ndcg@10"]
        assert resources.search_service("two-stage").plan().vectors == "two-stage"
    finally:
        resources.close()


def test_a_small_vector_needs_a_matryoshka_model(settings: object) -> None:
    from embedding.errors import InvalidInputError

    resources = Resources(settings.model_copy(update={"small_dim": 64}))  # type: ignore[attr-defined]
    try:
        with pytest.raises(InvalidInputError, match="not a Matryoshka model"):
            resources.recipe()
    finally:
        resources.close()
