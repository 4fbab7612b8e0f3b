"""Search: a query, an instruction, top-k and filters; results as cards with highlights."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.common import api, call, page_header, tags_of
from ui.highlight import highlight

CUSTOM = "Custom…"
MODES: dict[str, str | None] = {
    "The collection's default": None,
    "Hybrid (meaning + words)": "hybrid",
    "Meaning (dense)": "dense",
    "Words (BM25)": "sparse",
}
PRESET_NAMES = {
    "web_search": "Web search",
    "question_answering": "Question answering",
    "scientific_claim": "Scientific claim",
    "code": "Code",
}


def instruction_picker(info: dict[str, Any] | None) -> str | None:
    presets: dict[str, str] = (info or {}).get("presets", {})
    labels = {
        PRESET_NAMES.get(key, key.replace("_", " ").capitalize()): text
        for key, text in presets.items()
    }
    choice = st.selectbox(
        "Instruction",
        [*labels, CUSTOM],
        key="instruction_choice",
        help="Tells Qwen3 models what the query is for; others ignore it.",
    )
    if choice == CUSTOM:
        return (
            st.text_input(
                "Your instruction",
                key="instruction_custom",
                placeholder="Given a bug report, retrieve the code that fixes it",
            )
            or None
        )
    return labels.get(choice)


def document_panel(doc_id: str, hit_chunk: str | None, query: str) -> None:
    doc = call(lambda: api().document(doc_id, include_chunks=True), "open the document")
    if doc is None:
        return
    with st.container(border=True):
        head, close = st.columns([5, 1])
        head.markdown(f"#### :material/description: {doc['source']}")
        plural = "s" if doc["chunks"] != 1 else ""
        head.caption(
            f"{doc['chunks']} chunk{plural} · {doc['file_type']} · doc id `{doc['doc_id']}`"
        )
        if close.button("Close", key="close_doc", icon=":material/close:"):
            st.session_state.pop("open_doc", None)
            st.rerun()
        for chunk in doc.get("chunk_list") or []:
            marker = " · the result you opened" if chunk["chunk_id"] == hit_chunk else ""
            page = f" · page {chunk['page']}" if chunk.get("page") else ""
            st.markdown(f"**Chunk {chunk['chunk_index'] + 1}**{page}{marker}")
            st.html(f"<div class='chunk'>{highlight(chunk['text'], query)}</div>")


def result_card(rank: int, hit: dict[str, Any], query: str) -> None:
    with st.container(border=True):
        head, score, action = st.columns([6, 1, 1.4])
        page = f" · page {hit['page']}" if hit.get("page") else ""
        head.markdown(f"**{rank}. {hit['source']}**{page}")
        tags = ", ".join(str(t) for t in (hit.get("metadata") or {}).get("tags", []) or [])
        if tags:
            head.caption(f"tags: {tags}")
        score.metric("score", f"{hit['score']:.3f}", label_visibility="collapsed")
        if action.button("Open", key=f"open_{hit['chunk_id']}", icon=":material/open_in_new:"):
            st.session_state["open_doc"] = (hit["doc_id"], hit["chunk_id"])
            st.rerun()
        text = hit["text"] if len(hit["text"]) <= 1200 else hit["text"][:1200] + "…"
        st.html(f"<div class='chunk'>{highlight(text, query)}</div>")


page_header("Search", "Ask in your own words; results are the passages closest in meaning.")
docs = call(lambda: api().documents(), "list the documents") or {"documents": []}
sources = sorted({d["source"] for d in docs["documents"]})
all_tags = sorted({t for d in docs["documents"] for t in tags_of(d)})

with st.form("search"):
    query = st.text_input("Query", key="query", placeholder="What are the termination terms?")
    col1, col2 = st.columns([3, 1])
    with col1:
        instruction = instruction_picker(call(lambda: api().instructions(), "load the presets"))
    with col2:
        top_k = st.slider("Results", 1, 50, 10, key="top_k")
    col3, col4, col5 = st.columns([2, 2, 2])
    chosen_sources = col3.multiselect("Sources", sources, key="sources")
    chosen_tags = col4.multiselect("Tags", all_tags, key="tags")
    mode_label = col5.selectbox(
        "Match by",
        list(MODES),
        key="mode",
        help="Hybrid (the default where it can) fuses the meaning-based and the word-based "
        "rankings; collections built before word vectors existed search by meaning only.",
    )
    rerank = st.checkbox(
        "Rerank the candidates",
        key="rerank",
        help="Scores the best 50 again with the server's reranker (QUARRY_RERANK_MODEL).",
    )
    go = st.form_submit_button(
        "Search", type="primary", icon=":material/search:", key="search_submit"
    )

if go:
    if not query.strip():
        st.warning("Type a query first.")
        st.session_state.pop("results", None)
    else:
        filters: dict[str, Any] = {}
        if chosen_sources:
            filters["source"] = chosen_sources
        if chosen_tags:
            filters["tags"] = chosen_tags
        st.session_state.pop("open_doc", None)
        st.session_state["results"] = call(
            lambda: api().search(
                query, top_k, filters, instruction, mode=MODES[mode_label], rerank=rerank
            ),
            "search",
        )

if "open_doc" in st.session_state:
    doc_id, chunk_id = st.session_state["open_doc"]
    document_panel(doc_id, chunk_id, st.session_state.get("query", ""))

results = st.session_state.get("results")
if results:
    hits = results["hits"]
    timings = results["timings_ms"]
    stages = ", ".join(
        f"{name.removesuffix('_ms').replace('_', ' ')} {value:.0f} ms"
        for name, value in timings.items()
        if name.endswith("_ms") and name not in ("total_ms", "queue_ms")
    )
    st.caption(
        f"{len(hits)} results in {timings.get('total_ms', 0):.0f} ms, "
        f"{results.get('mode', 'dense')} ({stages})"
    )
    if not hits:
        st.info("Nothing matched. Try other words or fewer filters.")
    for rank, hit in enumerate(hits, start=1):
        result_card(rank, hit, results["query"])
elif not docs["documents"]:
    st.info("No documents yet: add some on the Upload page.", icon=":material/upload_file:")
