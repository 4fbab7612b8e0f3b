"""Upload: many files at once, optional tags and metadata, live progress per file and job."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import streamlit as st

from ui.common import api, call, page_header

STATUS_LABEL = {
    "queued": ":material/schedule: waiting",
    "parsing": ":material/article: parsing",
    "embedding": ":material/memory: embedding",
    "ingested": ":material/check_circle: indexed",
    "unchanged": ":material/check_circle: already indexed, unchanged",
    "superseded": ":material/update: superseded by a newer upload of the same name",
    "failed": ":material/error: failed",
    "retrying": ":material/autorenew: waiting to retry",
    "cancelled": ":material/cancel: cancelled",
}
FINISHED = {"done", "partial", "failed", "cancelled"}


def file_fraction(entry: dict[str, Any]) -> float:
    if entry.get("finished"):
        return 1.0
    chunked = entry.get("chunked", 0)
    if chunked:
        return min(0.1 + 0.9 * (entry["embedded"] + entry["stored"]) / (2 * chunked), 0.99)
    return 0.05 if entry.get("status") == "parsing" else 0.0


def job_caption(job: dict[str, Any]) -> str:
    progress = job["progress"]
    counts = progress["files_by_status"]
    parts = [f"{job['state']}", f"{progress['files']} files"]
    for status in ("ingested", "unchanged", "superseded", "failed"):
        if counts.get(status):
            parts.append(f"{counts[status]} {status}")
    parts.append(f"{progress['stored']} chunks stored")
    if progress["chunks_per_s"]:
        parts.append(f"{progress['chunks_per_s']:.0f} chunks/s")
    if progress.get("eta_s"):
        parts.append(f"ETA {progress['eta_s']:.0f} s")
    return " · ".join(parts)


def job_actions(job: dict[str, Any]) -> None:
    """Cancel while the job runs; retry its failed files (kept on the server) once it ended."""
    job_id = job["job_id"]
    if job["state"] not in FINISHED:
        if st.button("Cancel", key=f"cancel-{job_id}", icon=":material/cancel:"):
            call(partial(api().cancel_job, job_id), "cancel the job")
        return
    failed = any(f.get("retryable") for f in job["files"])
    if failed and st.button("Retry failed files", key=f"retry-{job_id}", icon=":material/replay:"):
        call(partial(api().retry_job, job_id), "retry the failed files")


def show_job(job: dict[str, Any]) -> None:
    with st.container(border=True):
        st.markdown(f"**Job** `{job['job_id'][:8]}` · collection `{job['collection']}`")
        st.progress(float(job["progress"]["fraction"]), text=job_caption(job))
        if job["state"] == "retrying" and job.get("error"):
            st.warning(job["error"]["message"], icon=":material/autorenew:")
        job_actions(job)
        for entry in job["files"]:
            left, right = st.columns([3, 2])
            left.progress(file_fraction(entry), text=entry["name"])
            label = STATUS_LABEL.get(entry["status"], entry["status"])
            if entry["status"] in ("parsing", "embedding") and entry.get("chunked"):
                label += f" · {entry['stored']}/{entry['chunked']} chunks"
            elif entry["status"] == "ingested":
                label += f" · {entry['stored']} chunk{'s' if entry['stored'] != 1 else ''}"
            if entry["status"] in ("parsing", "embedding") and entry.get("worker"):
                label += f" · on {entry['worker']}"
            if entry.get("attempts", 0) > 1 and not entry.get("finished"):
                label += f" · attempt {entry['attempts']}"
            right.markdown(label)
            if entry.get("error") and entry["status"] == "retrying":
                right.warning(entry["error"]["message"], icon=":material/autorenew:")
            elif entry.get("error"):
                right.error(entry["error"]["message"], icon=":material/error:")
            for warning in entry.get("warnings") or ():
                right.warning(warning, icon=":material/visibility:")


@st.fragment(run_every=1.0)
def progress_panel() -> None:
    job_ids: list[str] = st.session_state.get("jobs", [])
    if not job_ids:
        st.info("Uploaded files appear here with their progress.", icon=":material/info:")
        return
    for job_id in reversed(job_ids[-5:]):
        job = call(partial(api().job, job_id), "read the job's progress")
        if job is not None:
            show_job(job)


def parse_metadata(tags: str, extra: str) -> dict[str, Any] | None:
    metadata: dict[str, Any] = {}
    if extra.strip():
        try:
            value = json.loads(extra)
        except json.JSONDecodeError as exc:
            st.error(f"Metadata is not valid JSON: {exc.msg} (line {exc.lineno}).")
            return None
        if not isinstance(value, dict):
            st.error('Metadata must be a JSON object, such as {"team": "legal"}.')
            return None
        metadata.update(value)
    tag_list = [t.strip() for t in tags.split(",") if t.strip()]
    if tag_list:
        metadata["tags"] = tag_list
    return metadata


page_header(
    "Upload",
    "Drop documents to index them: PDF, Word, PowerPoint, Excel, HTML, "
    "Markdown, e-mail, EPUB, text and more.",
)
with st.form("upload", clear_on_submit=True):
    files = st.file_uploader("Documents", accept_multiple_files=True, key="files")
    tags = st.text_input("Tags", placeholder="contracts, 2024", help="comma-separated")
    extra = st.text_area("Metadata (JSON, optional)", placeholder='{"team": "legal"}', height=80)
    submitted = st.form_submit_button(
        "Upload and index", type="primary", icon=":material/upload:", key="upload_submit"
    )

if submitted:
    metadata = parse_metadata(tags, extra)
    if not files:
        st.warning("Choose one or more files first.")
    elif metadata is not None:
        payload = [(f.name, f.getvalue()) for f in files]
        accepted = call(lambda: api().upload(payload, metadata), "upload the files")
        if accepted is not None:
            st.session_state.setdefault("jobs", []).append(accepted["job_id"])
            count = len(accepted["accepted"])
            st.success(f"{count} file{'s' if count != 1 else ''} accepted for indexing.")
            for rejected in accepted["rejected"]:
                st.error(f"{rejected['file']}: {rejected['message']}", icon=":material/block:")

st.subheader("Progress")
progress_panel()
