"""One contract, every VectorStore: the embedded engine, qdrant-client, and a real server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrieval.document_pages import DocumentQuery
from retrieval.edge_store import EdgeStore
from retrieval.errors import RecipeMismatchError
from retrieval.models import ChunkRecord, CollectionRecipe, SearchPlan, chunk_id
from retrieval.protocol import VectorStore
from retrieval.sparse import BM25_SCHEME, ENGLISH_ONLY_SCHEME, Bm25Encoder

RECIPE = CollectionRecipe(
    model="m", dimension=8, instruction="find it", revision="r1", max_length=512
)
BACKENDS = ["edge", "qdrant-local", "qdrant-local-cluster-settings"] + (
    ["qdrant-server", "qdrant-server-cluster-settings"] if os.environ.get("QDRANT_URL") else []
)
# What a cluster would run with (a single test server takes these too, replication aside).
CLUSTER = {"shard_number": 2, "on_disk": True, "quantization": "int8", "tenant_key": "tenant"}


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    from qdrant_client import QdrantClient

    from retrieval.qdrant_store import QdrantOptions, QdrantServerStore

    backend: VectorStore
    options = QdrantOptions(**CLUSTER) if request.param.endswith("cluster-settings") else None
    if request.param == "edge":
        backend = EdgeStore(tmp_path / "edge")
    elif request.param.startswith("qdrant-local"):
        backend = QdrantServerStore(QdrantClient(path=str(tmp_path / "local")), options)
    else:
        backend = QdrantServerStore.connect(os.environ["QDRANT_URL"], options=options)
    yield backend
    backend.close()


@pytest.fixture()
def name() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def vec(*values: float) -> np.ndarray:
    out = np.zeros(8, dtype=np.float32)
    out[: len(values)] = values
    return out / np.linalg.norm(out)


def records(doc_id: str, source: str, vectors: list[np.ndarray], **meta: str) -> list[ChunkRecord]:
    return [
        ChunkRecord(
            chunk_id(doc_id, i),
            v,
            {
                "doc_id": doc_id,
                "source": source,
                "chunk_index": i,
                "chunk_count": len(vectors),
                "text": f"{source} #{i}",
                "page": i + 1,
                "meta": dict(meta),
                "ingested_at": "t",
            },
        )
        for i, v in enumerate(vectors)
    ]


def test_recipe_is_recorded_and_enforced(store: VectorStore, name: str) -> None:
    assert store.recipe(name) is None
    store.ensure_collection(name, RECIPE)
    store.ensure_collection(name, RECIPE)  # idempotent
    assert store.recipe(name) == RECIPE
    assert name in store.collections()
    for other in (
        CollectionRecipe("other-model", 8, "find it"),
        CollectionRecipe("m", 16, "find it"),
        CollectionRecipe("m", 8, "find it", revision="r2"),
        CollectionRecipe("m", 8, "find it", max_length=128),
    ):
        with pytest.raises(RecipeMismatchError) as info:
            store.ensure_collection(name, other)
        assert name in info.value.message
    # The instruction is the collection's default query phrasing, not its identity.
    store.ensure_collection(name, CollectionRecipe("m", 8, "another instruction"))


def test_recorded_identity_fields_are_compared() -> None:
    stored = CollectionRecipe("m", 8, "i", revision="r1", max_length=256)
    stored.check(CollectionRecipe("m", 8, "other", revision="r1", max_length=256), "c")
    with pytest.raises(RecipeMismatchError):
        stored.check(CollectionRecipe("m", 8, "i", revision="r2", max_length=256), "c")
    with pytest.raises(RecipeMismatchError):
        stored.check(CollectionRecipe("m", 8, "i", revision="r1", normalize=False), "c")


def test_search_ranks_filters_and_thresholds(store: VectorStore, name: str) -> None:
    store.ensure_collection(name, RECIPE)
    store.upsert(name, records("a", "a.txt", [vec(1, 0), vec(0.9, 0.1)], team="red"))
    store.upsert(name, records("b", "b.txt", [vec(0, 1), vec(0.2, 1)], team="blue"))
    query = np.stack([vec(1, 0), vec(0, 1)])
    best = store.search(name, query, limit=2)
    assert [h.doc_id for h in best[0]] == ["a", "a"]
    assert [h.doc_id for h in best[1]] == ["b", "b"]
    assert best[0][0].score >= best[0][1].score
    assert best[0][0].chunk_id == chunk_id("a", 0) and best[0][0].page == 1
    only_b = store.search(name, query[:1], limit=4, filters={"source": "b.txt"})[0]
    assert {h.doc_id for h in only_b} == {"b"}
    by_meta = store.search(name, query[:1], limit=4, filters={"team": "blue"})[0]
    assert {h.doc_id for h in by_meta} == {"b"} and by_meta[0].metadata == {"team": "blue"}
    by_doc = store.search(name, query[:1], limit=4, filters={"doc_id": "a"})[0]
    assert len(by_doc) == 2
    close = store.search(name, query[:1], limit=4, score_threshold=0.9)[0]
    assert close and all(h.score >= 0.9 for h in close) and {h.doc_id for h in close} == {"a"}


def test_documents_and_deletes(store: VectorStore, name: str) -> None:
    store.ensure_collection(name, RECIPE)
    store.upsert(name, records("a", "a.txt", [vec(1), vec(1, 1), vec(0, 1)]))
    store.upsert(name, records("b", "b.txt", [vec(1)]))
    info = store.document(name, "a")
    assert info is not None and info.chunks == 3 and info.complete and info.source == "a.txt"
    assert store.document(name, "missing") is None
    assert [d.doc_id for d in store.documents(name)] == ["a", "b"]
    chunks = store.chunks(name, "a")
    assert [c.chunk_index for c in chunks] == [0, 1, 2] and {c.doc_id for c in chunks} == {"a"}
    assert store.chunks(name, "missing") == []
    assert store.count(name) == 4
    assert store.delete_document(name, "a") == 3
    assert store.count(name) == 1 and store.document(name, "a") is None


def test_document_pages_are_found_in_the_store(store: VectorStore, name: str) -> None:
    """Every page, filtered by part of a name (any case) and by metadata (a number matches
    as its digits), is the slice of the whole list in (source, doc_id) order."""
    store.ensure_collection(name, RECIPE)
    docs = []  # (source, doc_id, metadata, chunks): two versions share "Shared.txt"
    for i, source in enumerate(["beta.md", "Alpha.txt", "Shared.txt", "Shared.txt", "zeta.pdf"]):
        meta: dict[str, Any] = {
            "shelf": "b2" if i % 2 else "c1",
            "year": 2020 + i % 2,
            "ratio": 2.5 if i < 2 else 0.5,
            "tags": ["x", f"t{i}"],
        }
        docs.append((source, f"d{9 - i}", meta, 1 + i % 3))
    for source, doc_id, meta, chunks in docs:
        batch = records(doc_id, source, [vec(1, k) for k in range(chunks)])
        for record in batch:
            record.payload["meta"] = meta
        store.upsert(name, batch)
    ordered = sorted(docs, key=lambda d: (d[0], d[1]))
    cases = [
        (DocumentQuery(), ordered),
        (DocumentQuery(source_part="SHARED"), [d for d in ordered if d[0] == "Shared.txt"]),
        (DocumentQuery(meta={"shelf": "b2"}), [d for d in ordered if d[2]["shelf"] == "b2"]),
        (DocumentQuery(meta={"year": "2021"}), [d for d in ordered if d[2]["year"] == 2021]),
        (
            DocumentQuery(source_part="a", meta={"year": "2020"}),
            [d for d in ordered if "a" in d[0].lower() and d[2]["year"] == 2020],
        ),
    ]
    # As their text: a list by any item, a number as it prints. (A flag too, but not on the
    # embedded engine: qdrant-edge-py turns `MatchValue(True)` into the integer 1.)
    cases += [
        (DocumentQuery(meta={"tags": "t2"}), [d for d in ordered if "t2" in d[2]["tags"]]),
        (DocumentQuery(meta={"ratio": "2.5"}), [d for d in ordered if d[2]["ratio"] == 2.5]),
        (DocumentQuery(meta={"year": "02021"}), []),
    ]
    for base, expected in cases:
        for offset, limit in [(0, 50), (0, 2), (1, 2), (2, 1), (3, 5), (9, 2)]:
            page = store.document_page(name, replace(base, offset=offset, limit=limit))
            assert page.total == len(expected)
            want = expected[offset : offset + limit]
            assert [(d.source, d.doc_id) for d in page.documents] == [(w[0], w[1]) for w in want]
            assert [d.chunks for d in page.documents] == [w[3] for w in want]
    assert [d.doc_id for d in store.documents(name)] == [d[1] for d in ordered]
    assert store.document_page(name, DocumentQuery(meta={"shelf": "none"})).total == 0


def test_partial_document_is_not_complete(store: VectorStore, name: str) -> None:
    store.ensure_collection(name, RECIPE)
    store.upsert(name, records("a", "a.txt", [vec(1), vec(0, 1), vec(1, 1)])[:2])
    info = store.document(name, "a")
    assert info is not None and not info.complete and info.expected_chunks == 3


def test_new_version_of_a_source_replaces_the_old(store: VectorStore, name: str) -> None:
    store.ensure_collection(name, RECIPE)
    store.upsert(name, records("old", "same.txt", [vec(1), vec(0, 1)]))
    store.upsert(name, records("new", "same.txt", [vec(1, 1)]))
    store.upsert(name, records("other", "other.txt", [vec(0, 1)]))
    assert store.prune_source(name, "same.txt", "new", 1) == 2
    assert sorted(d.doc_id for d in store.documents(name)) == ["new", "other"]
    assert store.prune_source(name, "same.txt", "new", 1) == 0


def test_pruning_drops_chunks_past_a_shorter_new_parse(store: VectorStore, name: str) -> None:
    store.ensure_collection(name, RECIPE)
    store.upsert(name, records("doc", "doc.txt", [vec(1), vec(0, 1), vec(1, 1)]))
    store.upsert(name, records("doc", "doc.txt", [vec(1, 0, 1)]))  # re-parsed: 1 chunk now
    assert store.prune_source(name, "doc.txt", "doc", 1) == 2
    info = store.document(name, "doc")
    assert info is not None and info.chunks == 1 and info.complete


TEXTS = {
    "owls": "Owls hunt mice at night with silent flight",
    "coffee": "Espresso coffee is brewed with hot water",
    "cheese": "Mice eat cheese in the kitchen at night",
}
# Dense vectors that disagree with the words: dense alone ranks coffee first for Q.
DENSE = {"owls": vec(0.2, 1), "coffee": vec(1, 0), "cheese": vec(0, 1)}
Q = vec(1, 0.1)


def text_records(encoder: Bm25Encoder | None) -> list[ChunkRecord]:
    out = []
    for doc, text in TEXTS.items():
        (sparse,) = encoder.documents([text]) if encoder else (None,)
        payload = {"doc_id": doc, "source": f"{doc}.txt", "chunk_index": 0, "chunk_count": 1}
        out.append(ChunkRecord(chunk_id(doc, 0), DENSE[doc], payload | {"text": text}, sparse))
    return out


def test_sparse_and_hybrid_search_fuse_both_lists(store: VectorStore, name: str) -> None:
    encoder = Bm25Encoder()
    store.ensure_collection(name, replace(RECIPE, sparse=BM25_SCHEME))
    assert store.recipe(name) == replace(RECIPE, sparse=BM25_SCHEME)
    store.upsert(name, text_records(encoder))
    words = encoder.queries(["mice hunting at night"])
    sparse = store.search(name, None, 3, sparse=words, plan=SearchPlan("sparse"))[0]
    assert {h.doc_id for h in sparse} == {"owls", "cheese"}  # coffee shares no term
    assert sparse[0].doc_id == "owls"  # "hunting" stems to "hunt": two terms match
    dense = store.search(name, Q[None, :], 3)[0]
    assert dense[0].doc_id == "coffee"
    hybrid = store.search(name, Q[None, :], 3, sparse=words, plan=SearchPlan("hybrid"))[0]
    assert [h.doc_id for h in hybrid][:1] == ["owls"]  # second in dense, first in sparse
    assert {h.doc_id for h in hybrid} == set(TEXTS)
    leaning = SearchPlan("hybrid", rrf_k=1, weights=(5.0, 1.0))  # dense counts 5 times
    assert store.search(name, Q[None, :], 3, sparse=words, plan=leaning)[0][0].doc_id == "coffee"
    stop_words = encoder.queries(["the and of"])
    assert store.search(name, None, 3, sparse=stop_words, plan=SearchPlan("sparse")) == [[]]
    fallback = store.search(name, Q[None, :], 3, sparse=stop_words, plan=SearchPlan("hybrid"))
    assert [h.doc_id for h in fallback[0]] == [h.doc_id for h in dense]
    filtered = store.search(
        name, Q[None, :], 3, {"doc_id": "cheese"}, sparse=words, plan=SearchPlan("hybrid")
    )
    assert [h.doc_id for h in filtered[0]] == ["cheese"]


def test_a_dense_only_collection_is_backfilled_without_re_embedding(
    store: VectorStore, name: str
) -> None:
    encoder = Bm25Encoder()
    store.ensure_collection(name, RECIPE)
    store.upsert(name, text_records(None))
    before = store.search(name, Q[None, :], 3)[0]
    assert store.add_sparse(name, BM25_SCHEME, encoder.documents) == len(TEXTS)
    assert store.recipe(name) == replace(RECIPE, sparse=BM25_SCHEME)
    after = store.search(name, Q[None, :], 3)[0]
    assert [(h.chunk_id, round(h.score, 5)) for h in after] == [
        (h.chunk_id, round(h.score, 5)) for h in before
    ]  # the dense vectors came through untouched
    words = encoder.queries(["kitchen cheese"])
    sparse = store.search(name, None, 3, sparse=words, plan=SearchPlan("sparse"))[0]
    assert [h.doc_id for h in sparse] == ["cheese"] and sparse[0].text == TEXTS["cheese"]
    assert store.add_sparse(name, BM25_SCHEME, encoder.documents) == 0  # already done
    assert store.count(name) == len(TEXTS)


def test_two_stage_search_rescores_small_vector_candidates_on_the_full_one(
    store: VectorStore, name: str
) -> None:
    rng = np.random.default_rng(7)
    recipe = replace(RECIPE, small_dim=4)
    store.ensure_collection(name, recipe)
    assert store.recipe(name) == recipe
    full = rng.normal(size=(40, 8)).astype(np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    store.upsert(name, records("m", "m.txt", list(full)))
    query = full[3] + rng.normal(scale=0.3, size=8).astype(np.float32)
    query /= np.linalg.norm(query)
    exact = np.argsort(-(full @ query))
    scores = {
        mode: store.search(name, query[None, :], 5, plan=SearchPlan(vectors=mode))[0]
        for mode in ("full", "small", "two-stage")
    }
    assert [h.chunk_index for h in scores["full"]] == list(exact[:5])
    small_q = query[:4] / np.linalg.norm(query[:4])
    small_full = full[:, :4] / np.linalg.norm(full[:, :4], axis=1, keepdims=True)
    assert scores["small"][0].chunk_index == int(np.argmax(small_full @ small_q))
    # Two-stage: the full vector's scores, over the small vector's candidates.
    two = scores["two-stage"]
    assert all(abs(h.score - float(full[h.chunk_index] @ query)) < 1e-4 for h in two)
    plan = SearchPlan(vectors="two-stage", candidates=40)  # every point a candidate
    everything = store.search(name, query[None, :], 5, plan=plan)[0]
    assert [h.chunk_index for h in everything] == list(exact[:5])


def test_a_collection_in_an_older_bm25_scheme_moves_to_the_current_one(
    store: VectorStore, name: str
) -> None:
    """Its weights stay in the scheme it records until `add_sparse` rebuilds them (the
    analyser changed: Cyrillic words are stemmed now); the dense vectors come through."""
    old, new = Bm25Encoder(ENGLISH_ONLY_SCHEME), Bm25Encoder(BM25_SCHEME)
    store.ensure_collection(name, replace(RECIPE, sparse=ENGLISH_ONLY_SCHEME))
    books = "Книги из библиотеки выдают всем."
    payload = {"doc_id": "books", "source": "books.txt", "chunk_index": 0, "chunk_count": 1}
    record = ChunkRecord(
        chunk_id("books", 0), DENSE["owls"], payload | {"text": books}, old.documents([books])[0]
    )
    store.upsert(name, [*text_records(old), record])
    asked = "библиотека"
    sparse = SearchPlan("sparse")
    assert store.search(name, None, 3, sparse=old.queries([asked]), plan=sparse) == [[]]
    before = store.search(name, Q[None, :], 4)[0]
    assert store.add_sparse(name, BM25_SCHEME, new.documents) == len(TEXTS) + 1
    assert store.recipe(name) == replace(RECIPE, sparse=BM25_SCHEME)
    found = store.search(name, None, 3, sparse=new.queries([asked]), plan=sparse)[0]
    assert [h.doc_id for h in found] == ["books"]
    after = store.search(name, Q[None, :], 4)[0]
    assert sorted((round(h.score, 5), h.chunk_id) for h in after) == sorted(
        (round(h.score, 5), h.chunk_id) for h in before
    )  # (the books and the owls share a dense vector: their order may swap)
    assert store.add_sparse(name, BM25_SCHEME, new.documents) == 0
    # A writer that weighed its chunks before the move: the store weighs them again
    late = "Библиотеки открыты по субботам."
    head = {"doc_id": "late", "source": "late.txt", "chunk_index": 0, "chunk_count": 1}
    stale = old.documents([late])[0]
    store.upsert(
        name,
        [
            ChunkRecord(
                chunk_id("late", 0), DENSE["cheese"], head | {"text": late}, stale, old.scheme
            )
        ],
    )
    found = store.search(name, None, 3, sparse=new.queries(["библиотека"]), plan=sparse)[0]
    assert sorted(h.doc_id for h in found) == ["books", "late"]


def test_swap_moves_readers_to_the_other_collection_in_one_step(
    store: VectorStore, name: str
) -> None:
    from retrieval.errors import CollectionMovedError
    from retrieval.models import side_name

    wider = replace(RECIPE, model="m2", dimension=8, revision="r2", location="/models/m2")
    store.ensure_collection(name, RECIPE)
    store.upsert(name, records("old", "a.txt", [vec(1, 0)]))
    staged = side_name(name, "next")
    store.ensure_collection(staged, wider)
    moved = records("new", "a.txt", [vec(0, 1)])
    store.upsert(staged, [replace(r, vectors=wider.vectors_key) for r in moved])
    assert store.collections() == [name]  # the one built beside it is listed nowhere
    assert store.chunk_payloads(staged, "new")[0][1]["text"] == "a.txt #0"

    with store.holding_writes(name):
        store.swap(name, staged, side_name(name, "previous"))
    assert store.recipe(name) == wider
    assert [d.doc_id for d in store.documents(name)] == ["new"]
    assert [d.doc_id for d in store.documents(side_name(name, "previous"))] == ["old"]
    assert store.recipe(staged) is None
    hits = store.search(name, np.stack([vec(0, 1)]), 5)[0]
    assert [h.doc_id for h in hits] == ["new"]
    # A writer that embedded for the old recipe is refused, not mixed in
    stale = [replace(r, vectors=RECIPE.vectors_key) for r in records("late", "b.txt", [vec(1)])]
    with pytest.raises(CollectionMovedError):
        store.upsert(name, stale)

    store.swap(name, side_name(name, "previous"), staged)  # and back (a rollback)
    assert store.recipe(name) == RECIPE
    assert [d.doc_id for d in store.documents(name)] == ["old"]
    assert [d.doc_id for d in store.documents(staged)] == ["new"]


def test_a_swap_killed_between_its_renames_is_finished_when_the_store_opens(
    tmp_path: Path,
) -> None:
    import json

    from retrieval.models import side_name

    root = tmp_path / "edge"
    store = EdgeStore(root)
    store.ensure_collection("c", RECIPE)
    store.upsert("c", records("old", "a.txt", [vec(1)]))
    store.ensure_collection(side_name("c", "next"), replace(RECIPE, revision="r2"))
    store.upsert(side_name("c", "next"), records("new", "a.txt", [vec(0, 1)]))
    store.close()
    # Killed after the journal and the first rename (live -> outgoing), before the second
    (root / "c~swap.json").write_text(json.dumps({"incoming": "c~next", "outgoing": "c~previous"}))
    (root / "c").rename(root / "c~previous")
    reopened = EdgeStore(root)
    assert [d.doc_id for d in reopened.documents("c")] == ["new"]
    assert [d.doc_id for d in reopened.documents("c~previous")] == ["old"]
    assert not (root / "c~swap.json").exists()
    reopened.close()


def test_a_collection_named_like_a_journal_opens_with_the_store(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    store = EdgeStore(root)
    store.ensure_collection("x.swap.json", RECIPE)
    store.upsert("x.swap.json", records("d", "a.txt", [vec(1)]))
    store.close()
    reopened = EdgeStore(root)  # (a swap's journal is no collection's name)
    assert [d.doc_id for d in reopened.documents("x.swap.json")] == ["d"]
    reopened.close()
