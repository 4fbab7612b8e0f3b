"""`quarry sync FOLDER --watch` through a running server: a real `quarry serve`, a real
watching `quarry sync` process, a real folder edited (written, renamed, deleted) while
searches run against the server without pause."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from ..servers import Process, quarry_env


def _sources(url: str) -> set[str]:
    page = httpx.get(f"{url}/v1/documents", params={"limit": 100}, timeout=30).json()
    return {doc["source"] for doc in page["documents"]}


def _until(check: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not seen within {timeout} s: {what}"
        time.sleep(0.5)


def test_a_watched_folder_is_followed_while_searches_run(
    tmp_path: Path, minilm_path: str, redis_process: Any
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "owls.md").write_text("Owls hunt mice at night using silent flight.")
    (folder / "tea.txt").write_text("Green tea leaves are steamed or pan-fired after picking.")
    env = quarry_env(tmp_path / "data", minilm_path, redis_process.url)
    server = Process("serve", env, tmp_path / "server.log")
    server.start()
    stop, failures, searches = threading.Event(), [], [0]

    def search_without_pause() -> None:
        while not stop.is_set():
            answer = httpx.post(
                f"{server.url}/v1/search", json={"query": "owls", "top_k": 3}, timeout=30
            )
            if answer.status_code not in (200, 404):  # 404: before the first file lands
                failures.append((answer.status_code, answer.text))
            searches[0] += 1

    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "sync",
            str(folder),
            "--watch",
            "--json",
            "--api",
            server.url,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "watch.log").open("w"),
        text=True,
    )
    lines: list[str] = []  # the watcher's reports, read as they come: a pass prints its
    # line after the server has its changes, so the test waits for the lines themselves

    def read_reports() -> None:
        for line in watcher.stdout or []:
            lines.append(line)

    reader = threading.Thread(target=read_reports, daemon=True)
    reader.start()
    searcher = threading.Thread(target=search_without_pause)
    searcher.start()
    try:
        _until(lambda: _sources(server.url) == {"owls.md", "tea.txt"}, "the first sync")
        (folder / "owls.md").write_text("Owls swallow their prey whole at dusk.")
        (folder / "tea.txt").rename(folder / "green-tea.txt")
        (folder / "bread.txt").write_text("Sourdough rises slowly with wild yeast.")
        (folder / ".swap.tmp").write_text("an editor's scratch file is not synced")
        _until(
            lambda: _sources(server.url) == {"owls.md", "green-tea.txt", "bread.txt"},
            "the edit, the rename and the new file",
        )
        hits = httpx.post(
            f"{server.url}/v1/search",
            json={"query": "swallow prey whole", "top_k": 1, "mode": "sparse"},
            timeout=30,
        ).json()["hits"]
        assert hits[0]["source"] == "owls.md"
        (folder / "bread.txt").unlink()
        _until(lambda: "bread.txt" not in _sources(server.url), "the deletion")
        _until(lambda: sum(line.startswith("{") for line in lines) >= 3, "three passes' reports")
    finally:
        stop.set()
        searcher.join()
        watcher.terminate()
        watcher.wait(timeout=30)
        reader.join(timeout=30)
        server.stop()
    runs = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(runs) >= 3 and all(run["refused"] is None for run in runs)
    assert sum(run["ingest"]["ingested"] for run in runs) == 5  # 2, then 3: nothing twice
    assert not failures and searches[0] > 10, (failures, searches)
