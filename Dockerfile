# Quarry's Python services (API and UI) on one image.
# CUDA torch by default; build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu
# for a CPU-only image (compose.cpu.yaml does).
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface \
    QUARRY_DATA_DIR=/data

# Tesseract (OCR, with a set of language packs), LibreOffice (legacy Office), poppler: the
# same list `make install` installs.
COPY scripts/system-packages.sh /tmp/system-packages.sh
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 \
    && QUARRY_REQUIRE_SYSTEM_PACKAGES=1 /tmp/system-packages.sh \
    && rm -rf /var/lib/apt/lists/* /tmp/system-packages.sh

WORKDIR /srv/quarry
# torch (and the torchvision that unstructured[pdf] pulls in) from one index, so they match.
RUN pip install torch torchvision --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY app ./app
COPY ingest ./ingest
COPY embedding ./embedding
COPY retrieval ./retrieval
COPY ui ./ui
COPY client ./client
RUN pip install .

RUN useradd --create-home --uid 1000 quarry \
    && mkdir -p /data /cache/huggingface \
    && chown -R quarry /data /cache
USER quarry
EXPOSE 8000 8501
CMD ["quarry", "serve", "--host", "0.0.0.0", "--port", "8000"]
