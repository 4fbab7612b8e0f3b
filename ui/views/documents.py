"""Documents: a searchable table; open, re-index or delete (with confirmation) one of them."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.common import api, call, page_header, size, tags_of, when


def table_rows(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "source": d["source"],
            "type": d["file_type"],
            "size": size(d["size_bytes"]),
            "chunks": d["chunks"] if d["complete"] else f"{d['chunks']}/{d['expected_chunks']}",
            "ingested at": when(d["ingested_at"]),
            "tags": ", ".join(tags_of(d)),
            "doc id": d["doc_id"],
        }
        for d in documents
    ]


def actions(doc: dict[str, Any]) -> None:
    st.subheader(doc["source"])
    chunks = f"{doc['chunks']} chunk{'s' if doc['chunks'] != 1 else ''}"
    st.caption(f"doc id `{doc['doc_id']}` · {chunks} · {size(doc['size_bytes'])}")
    show, redo, delete = st.columns(3)
    if show.button("Show chunks", icon=":material/view_agenda:", key="show"):
        st.session_state["show_chunks"] = doc["doc_id"]
    if redo.button("Re-index", icon=":material/refresh:", key="reingest"):
        accepted = call(lambda: api().reingest(doc["doc_id"]), "re-index the document")
        if accepted is not None:
            st.session_state.setdefault("jobs", []).append(accepted["job_id"])
            st.success("Re-indexing started: follow it on the Upload page.")
    with delete:
        confirm = st.checkbox(f"Yes, delete {doc['source']}", key="confirm_delete")
        if st.button(
            "Delete", icon=":material/delete:", key="delete", disabled=not confirm, type="primary"
        ):
            removed = call(lambda: api().delete(doc["doc_id"]), "delete the document")
            if removed is not None:
                st.session_state.pop("confirm_delete", None)
                st.toast(f"Deleted {doc['source']} ({removed['deleted_chunks']} chunks)")
                st.rerun()
    if st.session_state.get("show_chunks") == doc["doc_id"]:
        full = call(lambda: api().document(doc["doc_id"], include_chunks=True), "load the chunks")
        for chunk in (full or {}).get("chunk_list") or []:
            page = f" · page {chunk['page']}" if chunk.get("page") else ""
            with st.expander(f"Chunk {chunk['chunk_index'] + 1}{page}"):
                st.text(chunk["text"])


page_header("Documents", "Everything indexed in the collection.")
needle = st.text_input("Find by file name", key="needle", placeholder="report")
listing = call(lambda: api().documents(source=needle or None), "list the documents")
if listing is not None:
    documents = listing["documents"]
    st.caption(f"{listing['total']} document{'s' if listing['total'] != 1 else ''}")
    if documents:
        st.dataframe(table_rows(documents), hide_index=True, width="stretch")
        labels = {f"{d['source']}  ·  {d['doc_id'][:8]}": d for d in documents}
        picked = st.selectbox("Document", list(labels), key="picked")
        if picked:
            actions(labels[picked])
    else:
        st.info(
            "No documents match." if needle else "No documents yet: add some on the Upload page."
        )
