"""Qwen3-Embedding-4B throughput: Quarry's embedder against plain sentence-transformers.

Builds the exact Qwen3-Embedding-4B architecture with random weights and the real Qwen
tokenizer (its speed is the real model's speed), then embeds, in one run on one device:
the SciFact corpus as Quarry chunks it, and fixed 512- and 2048-token sets. For plain
`SentenceTransformer.encode(batch_size=32)` and for Quarry's embedder it prints tokens/s,
MFU (tokens/s x FLOP per token / the matmul peak measured in the same run), padding waste
(tokens computed / real tokens), peak GPU memory, the ratio of the two, and the cosine of
Quarry's vectors to the plain ones (>= 0.999 in bf16). `--long` also embeds one 32k-token
input. `--tiny` runs the same at a tiny shape (a CPU check of the bench itself).

    python bench/gpu.py [--tiny] [--limit N] [--long]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from embedding.batching import pack_batches
from embedding.model_source import resolve_model
from embedding.random_qwen import QWEN3_EMBEDDING_4B, TINY, build_random_qwen3
from embedding.st_embedder import SentenceTransformerEmbedder

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = [ROOT.parent / "shared" / "eval" / "scifact", ROOT / "shared" / "eval" / "scifact"]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matmul on this device, measured now."""
    size = 8192 if device == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync()
    runs = 20 if device == "cuda" else 3
    started = time.perf_counter()
    for _ in range(runs):
        a @ b
    sync()
    return 2 * size**3 * runs / (time.perf_counter() - started)


def flop_per_token(config: dict[str, Any], mean_context: float) -> float:
    """Forward FLOP per token: 2 x the matmul weights, plus causal attention over
    `mean_context` earlier tokens on average (QK^T and AV)."""
    hidden, heads, kv = (
        config["hidden_size"],
        config["num_attention_heads"],
        config["num_key_value_heads"],
    )
    head_dim = config["head_dim"]
    per_layer = hidden * head_dim * (2 * heads + 2 * kv) + 3 * hidden * config["intermediate_size"]
    attention = 4 * mean_context * heads * head_dim
    return float(config["num_hidden_layers"] * (2 * per_layer + attention))


def scifact_chunks(tokenizer_source: Path, limit: int | None) -> list[str]:
    """SciFact's corpus as Quarry chunks it (512-token chunks, 64 overlap)."""
    from ingest.chunking import Chunker
    from ingest.evaluation import load_beir

    folder = next((p for p in SCIFACT if (p / "corpus.jsonl").is_file()), None)
    if folder is None:
        raise SystemExit(f"SciFact not found (looked in {', '.join(map(str, SCIFACT))})")
    from transformers import AutoTokenizer

    from embedding.tokenizers import SharedTokenizer

    tokenizer = SharedTokenizer(AutoTokenizer.from_pretrained(str(tokenizer_source)))
    chunker = Chunker(tokenizer, 512, 64)
    sources = list(load_beir(folder, "test")[0])[: limit or None]
    return [chunk.text for source in sources for chunk in chunker.chunk(source.parse())]


def fixed_length(texts: list[str], tokenizer: Any, tokens: int, count: int) -> list[str]:
    """`count` texts of exactly `tokens` tokens, cut from the running corpus text."""
    ids = tokenizer("\n".join(texts), add_special_tokens=False)["input_ids"]
    while len(ids) < tokens * count:
        ids = ids + ids
    return [tokenizer.decode(ids[i * tokens : (i + 1) * tokens]) for i in range(count)]


def timed(run: Callable[[], np.ndarray], device: str) -> tuple[np.ndarray, float, float]:
    """The result, seconds and peak device memory (GiB) of one run."""
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync()
    started = time.perf_counter()
    result = run()
    sync()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return result, seconds, peak


def padded_tokens(lengths: list[int], batches: list[list[int]]) -> int:
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def measure(
    name: str,
    texts: list[str],
    plain: Any,
    quarry: SentenceTransformerEmbedder,
    config: dict[str, Any],
    peak: float,
    device: str,
) -> dict[str, float]:
    lengths = quarry.token_counts(texts)
    real = sum(lengths)
    flop = flop_per_token(config, float(np.mean([n * n for n in lengths]) / (2 * np.mean(lengths))))
    plain.encode(texts[:64], batch_size=32)  # warm-up: kernels, allocator
    quarry.embed_documents(texts[:64])
    expected, plain_s, plain_mem = timed(
        lambda: plain.encode(texts, batch_size=32, convert_to_numpy=True), device
    )
    found, quarry_s, quarry_mem = timed(lambda: quarry.embed_documents(texts), device)
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # encode sorts by length
    plain_batches = [order[i : i + 32] for i in range(0, len(order), 32)]
    budget = quarry.bulk_token_budget
    quarry_batches = pack_batches(lengths, budget, padded=quarry._packed is None)
    quarry_waste = 1.0 if quarry._packed else padded_tokens(lengths, quarry_batches) / real
    cosines = (expected.astype(np.float32) * found).sum(axis=1)
    rows = {
        "plain": (real / plain_s, padded_tokens(lengths, plain_batches) / real, plain_mem),
        "quarry": (real / quarry_s, quarry_waste, quarry_mem),
    }
    print(f"\n{name}: {len(texts)} texts, {real:,} tokens (mean {real / len(texts):.0f})")
    for label, (rate, waste, memory) in rows.items():
        print(
            f"  {label:>6}: {rate:>10,.0f} tokens/s  MFU {100 * rate * flop / peak:5.1f}%  "
            f"padding x{waste:.2f}  peak memory {memory:.1f} GiB"
        )
    ratio = rows["quarry"][0] / rows["plain"][0]
    print(f"  ratio quarry / plain: {ratio:.2f}x; cosine to plain: min {cosines.min():.5f}")
    return {"ratio": ratio, "tokens_per_s": rows["quarry"][0], "min_cosine": float(cosines.min())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="a tiny model (checks the bench)")
    parser.add_argument("--limit", type=int, default=None, help="SciFact documents to use")
    parser.add_argument("--long", action="store_true", help="also embed one 32k-token input")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    shape = TINY if args.tiny else QWEN3_EMBEDDING_4B
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, {dtype}")
    peak = matmul_peak(device, dtype)
    print(f"measured matmul peak: {peak / 1e12:.1f} TFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        weights = "bfloat16" if device == "cuda" else "float32"
        folder = build_random_qwen3(Path(tmp) / "qwen3-embedding", shape, dtype=weights)
        source = resolve_model(str(folder))
        from sentence_transformers import SentenceTransformer

        plain = SentenceTransformer(
            str(folder), device=device, model_kwargs={"dtype": dtype}, local_files_only=True
        )
        plain.max_seq_length = 8192
        quarry = SentenceTransformerEmbedder(source, device=device, max_length=32768)
        chunks = scifact_chunks(folder, args.limit)
        tokenizer = plain.tokenizer
        scale = 1 if device == "cuda" else 32  # a CPU run only checks the bench
        sets = {
            "SciFact chunks": chunks,
            "512-token set": fixed_length(chunks, tokenizer, 511, 2048 // scale),
            "2048-token set": fixed_length(chunks, tokenizer, 2047, 512 // scale),
        }
        for name, texts in sets.items():
            measure(name, texts, plain, quarry, shape, peak, device)
        if args.long:
            text = fixed_length(chunks, tokenizer, 32767, 1)
            vector, seconds, memory = timed(lambda: quarry.embed_documents(text), device)
            print(
                f"\none 32k-token input: {seconds:.2f} s, peak memory {memory:.1f} GiB, "
                f"norm {np.linalg.norm(vector):.4f}"
            )


if __name__ == "__main__":
    main()
