"""Qwen3-Embedding without padding: a batch's sequences packed end to end, one forward.

Left-padded batches spend GPU work on pad tokens (a batch of one 2,000-token and thirty-one
200-token chunks is 90 % padding). Here the real tokens of a batch are laid out as one
row; RoPE positions restart at every sequence and attention is causal *within* each
sequence (variable-length attention over cumulative sequence offsets), so a batch costs
its real tokens only. The model's own modules (embeddings, norms, projections, MLPs) run
unchanged; only the attention call and the layout differ, and the last token of each
sequence is pooled, normalised and cut to the Matryoshka size on the GPU.

Attention backends, fastest first: FlashAttention's `flash_attn_varlen_func` (when the
package is installed), PyTorch's own `torch.nn.attention.varlen.varlen_attn` (CUDA), and
scaled-dot-product attention per sequence (any device: the reference the others are
tested against).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float], Any]


@dataclass(frozen=True)
class PackedBatch:
    """Real tokens of several sequences, end to end, with their offsets."""

    input_ids: torch.Tensor  # (total,)
    cu_seqlens: torch.Tensor  # (n + 1,) int32: sequence i is [cu[i], cu[i+1])
    max_len: int

    @property
    def lengths(self) -> torch.Tensor:
        return self.cu_seqlens.diff()

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(
            self.input_ids.to(device, non_blocking=True),
            self.cu_seqlens.to(device, non_blocking=True),
            self.max_len,
        )


def pack_features(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PackedBatch:
    """Drop the padding of a tokenizer's batch (either side) and lay the rows end to end."""
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, dim=0)
    ids = input_ids[mask]  # row by row, each row's tokens in order
    if torch.cuda.is_available():
        ids, cu = ids.pin_memory(), cu.pin_memory()
    return PackedBatch(ids, cu, int(lengths.max()) if len(lengths) else 0)


def positions_of(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """RoPE positions that restart at 0 at the start of every packed sequence."""
    lengths = cu_seqlens.diff().long()
    starts = torch.repeat_interleave(cu_seqlens[:-1].long(), lengths)
    return torch.arange(total, device=cu_seqlens.device) - starts


def _sdpa_per_sequence(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int, scale: float
) -> torch.Tensor:
    out = torch.empty_like(q)
    bounds = cu.tolist()
    groups = q.shape[1] // k.shape[1]
    for start, end in itertools.pairwise(bounds):
        qs = q[start:end].transpose(0, 1)  # (heads, len, dim)
        ks = k[start:end].transpose(0, 1).repeat_interleave(groups, dim=0)
        vs = v[start:end].transpose(0, 1).repeat_interleave(groups, dim=0)
        attended = torch.nn.functional.scaled_dot_product_attention(
            qs, ks, vs, is_causal=True, scale=scale
        )
        out[start:end] = attended.transpose(0, 1)
    return out


def _torch_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int, scale: float
) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    out = varlen_attn(
        q, k, v, cu, cu, max_len, max_len, scale=scale, window_size=(-1, 0), enable_gqa=True
    )
    assert isinstance(out, torch.Tensor)
    return out


def _flash_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int, scale: float
) -> torch.Tensor:
    from flash_attn import flash_attn_varlen_func

    out = flash_attn_varlen_func(
        q, k, v, cu, cu, max_len, max_len, softmax_scale=scale, causal=True
    )
    assert isinstance(out, torch.Tensor)
    return out


def _candidates(device: torch.device, dtype: torch.dtype) -> list[tuple[str, Attention]]:
    found: list[tuple[str, Attention]] = []
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        try:
            import flash_attn  # noqa: F401

            found.append(("flash_attn varlen", _flash_varlen))
        except ImportError:
            pass
        try:
            from torch.nn.attention.varlen import varlen_attn  # noqa: F401

            found.append(("torch varlen_attn", _torch_varlen))
        except ImportError:
            pass
    return found


def _agrees(attention: Attention, heads: int, kv_heads: int, head_dim: int, device: Any) -> bool:
    """Whether `attention` runs here and matches the per-sequence reference on a small
    packed batch (a kernel may exist in this build yet not support GQA or this GPU)."""
    torch.manual_seed(0)
    dtype = torch.bfloat16
    cu = torch.tensor([0, 5, 17, 18], dtype=torch.int32, device=device)
    q = torch.randn(18, heads, head_dim, device=device, dtype=dtype)
    k = torch.randn(18, kv_heads, head_dim, device=device, dtype=dtype)
    v = torch.randn(18, kv_heads, head_dim, device=device, dtype=dtype)
    scale = head_dim**-0.5
    try:
        got = attention(q, k, v, cu, 12, scale)
    except Exception as exc:
        log.warning("variable-length attention unusable here: %s", exc)
        return False
    want = _sdpa_per_sequence(q, k, v, cu, 12, scale)
    return bool(torch.allclose(got.float(), want.float(), atol=2e-2, rtol=2e-2))


def pick_attention(
    device: torch.device, dtype: torch.dtype, heads: int, kv_heads: int, head_dim: int
) -> tuple[str, Attention]:
    """The fastest variable-length attention that runs correctly on this device."""
    for name, attention in _candidates(device, dtype):
        if _agrees(attention, heads, kv_heads, head_dim, device):
            return name, attention
    return "sdpa per sequence", _sdpa_per_sequence


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class PackedQwen3:
    """Runs a transformers `Qwen3Model` on packed batches and pools the last tokens."""

    def __init__(self, model: Any, attention: tuple[str, Attention] | None = None) -> None:
        self.model = model
        first = next(model.parameters())
        self.device, self.dtype = first.device, first.dtype
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.backend, self._attention = attention or pick_attention(
            self.device, self.dtype, self.heads, self.kv_heads, self.head_dim
        )

    @torch.inference_mode()
    def last_hidden(self, batch: PackedBatch) -> torch.Tensor:
        """The final hidden state of every sequence's last token: (n, hidden)."""
        batch = batch.to(self.device)
        total = batch.input_ids.shape[0]
        model = self.model
        hidden = model.embed_tokens(batch.input_ids)
        positions = positions_of(batch.cu_seqlens, total)
        cos, sin = model.rotary_emb(hidden[None], positions[None])
        cos, sin = cos[0, :, None, :], sin[0, :, None, :]  # (total, 1, head_dim)
        for layer in model.layers:
            residual = hidden
            x = layer.input_layernorm(hidden)
            attn = layer.self_attn
            q = attn.q_norm(attn.q_proj(x).view(total, self.heads, self.head_dim))
            k = attn.k_norm(attn.k_proj(x).view(total, self.kv_heads, self.head_dim))
            v = attn.v_proj(x).view(total, self.kv_heads, self.head_dim)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            out = self._attention(q, k, v, batch.cu_seqlens, batch.max_len, attn.scaling)
            hidden = residual + attn.o_proj(out.reshape(total, self.heads * self.head_dim))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = model.norm(hidden)
        return hidden[(batch.cu_seqlens[1:] - 1).long()]

    def embed(self, batch: PackedBatch, dimension: int) -> torch.Tensor:
        """L2-normalised embeddings cut to `dimension` (Matryoshka), computed on the device,
        as float32 on the CPU."""
        last = self.last_hidden(batch)[:, :dimension].float()
        return torch.nn.functional.normalize(last, dim=-1).cpu()


def split_on_oom(
    run: Callable[[Sequence[int]], torch.Tensor], rows: Sequence[int]
) -> list[tuple[Sequence[int], torch.Tensor]]:
    """Run `rows`; when the GPU runs out of memory, run each half instead (recursively),
    so a batch too large for the free memory slows down instead of failing."""
    try:
        return [(rows, run(rows))]
    except torch.OutOfMemoryError:
        if len(rows) == 1:
            raise
        torch.cuda.empty_cache()
        middle = len(rows) // 2
        log.warning("out of GPU memory on %d inputs; splitting the batch", len(rows))
        return split_on_oom(run, rows[:middle]) + split_on_oom(run, rows[middle:])
