"""Quarry's web UI: upload, search, documents and status, all through the HTTP API."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Quarry", page_icon=":material/manage_search:", layout="wide")

pages = [
    st.Page("views/search.py", title="Search", icon=":material/search:", default=True),
    st.Page("views/upload.py", title="Upload", icon=":material/upload_file:"),
    st.Page("views/documents.py", title="Documents", icon=":material/description:"),
    st.Page("views/sources.py", title="Sources", icon=":material/sync:"),
    st.Page("views/status.py", title="Status", icon=":material/monitor_heart:"),
]
with st.sidebar:
    st.markdown("### :material/manage_search: Quarry")
    st.caption("Index documents, search them by meaning.")
st.navigation(pages).run()
