#!/usr/bin/env bash
# Installs the system tools (Tesseract, LibreOffice, poppler) where it may, then creates
# .venv and installs Quarry with its test tools, offline-capable models included.
# torch is pinned first: on a CPU-only machine this takes the local CPU build instead of
# pulling gigabytes of CUDA packages; set QUARRY_TORCH to choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${QUARRY_TORCH:-torch==2.13.0}
./scripts/system-packages.sh
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.quarry-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/install.sh ]; then
    exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH"
echo "$TORCH" > .venv/torch-constraint.txt
.venv/bin/python -m pip install -q -c .venv/torch-constraint.txt -e ".[dev]"
# unstructured[pdf] pulls torchvision through timm; the PyPI build is CUDA-only and breaks
# `import transformers` on a CPU torch. Quarry's fast PDF path does not need it.
if .venv/bin/python -c "import torch,sys; sys.exit(0 if torch.version.cuda is None else 1)"; then
    .venv/bin/python -m pip uninstall -q -y torchvision || true
fi
touch "$stamp"
