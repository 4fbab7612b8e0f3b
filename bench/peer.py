"""The nearest peer, timed on the same files and model: LlamaIndex's IngestionPipeline, in
an environment of its own (made once under ~/.cache/quarry-bench, torch pinned as Quarry's
is), so neither project's dependencies bend the other's."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = Path.home() / ".cache" / "quarry-bench" / "llamaindex"
PACKAGES = (
    "llama-index-core",
    "llama-index-embeddings-huggingface",
    "llama-index-vector-stores-qdrant",
)


def llamaindex_python() -> Path:
    """The peer environment's Python, made (a few minutes, once) when missing."""
    python = ENV / "bin" / "python"
    if (ENV / ".installed").is_file():
        return python
    print(f"making LlamaIndex's environment in {ENV} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(ENV)], check=True)
    torch = ROOT / ".venv" / "torch-constraint.txt"
    pins = torch.read_text().split() if torch.is_file() else []
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *pins, *PACKAGES], check=True)
    (ENV / ".installed").write_text(" ".join([*pins, *PACKAGES]))
    return python


def llamaindex_ingest(paths: list[Path], model_dir: Path) -> dict[str, float]:
    """Seconds, documents and nodes of LlamaIndex's pipeline over `paths` with the model
    at `model_dir`, into a fresh local Qdrant."""
    python = llamaindex_python()
    with tempfile.TemporaryDirectory() as name:
        listing = Path(name) / "files.txt"
        listing.write_text("\n".join(str(p) for p in paths), encoding="utf-8")
        done = subprocess.run(
            [
                str(python),
                str(ROOT / "bench" / "llamaindex_run.py"),
                str(listing),
                str(model_dir),
                str(Path(name) / "qdrant"),
            ],
            check=True,
            capture_output=True,
            text=True,
            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
