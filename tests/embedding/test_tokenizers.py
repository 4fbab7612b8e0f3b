"""The shared token counter gives what the transformers call gives, for any thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from embedding.model_inputs import ensure_trailing_eos
from embedding.tokenizers import SharedTokenizer

TEXTS = [
    "The quick brown fox. 한국어 텍스트 신용카드",
    "<|endoftext|> [CLS] hello [SEP] <|im_start|> special-looking text",
    "",
    "   spaces\n\nnew  lines\t",
    "ÉCOLE naïve café 東京 😀 " * 40,
]


@pytest.fixture(params=["minilm", "qwen"])
def template(request: pytest.FixtureRequest, minilm_path: str, tiny_qwen: Path) -> Any:
    if request.param == "minilm":
        return AutoTokenizer.from_pretrained(minilm_path)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_qwen), padding_side="left")
    ensure_trailing_eos(tokenizer)
    return tokenizer


def test_ids_offsets_and_truncated_counts_are_the_transformers_call(template: Any) -> None:
    shared = SharedTokenizer(template)
    for special in (False, True):
        expected = template(TEXTS, add_special_tokens=special, return_offsets_mapping=True)
        got = shared.encode(TEXTS, special)
        assert [t.ids for t in got] == expected["input_ids"]
        offsets = [list(map(tuple, row)) for row in expected["offset_mapping"]]
        assert [t.offsets for t in got] == offsets
    truncated = template(TEXTS, add_special_tokens=True, truncation=True, max_length=16)
    assert [min(n, 16) for n in shared.counts(TEXTS, special=True)] == [
        len(row) for row in truncated["input_ids"]
    ]
    assert shared.special == template.num_special_tokens_to_add(pair=False)


def test_threads_encode_side_by_side_while_the_template_is_reconfigured(template: Any) -> None:
    shared = SharedTokenizer(template)
    texts = [f"text number {i} " * (1 + i % 30) for i in range(64)]
    expected = shared.counts(texts)
    problems: list[BaseException] = []

    def encode() -> None:
        try:
            for _ in range(20):
                assert shared.counts(texts) == expected
        except BaseException as exc:
            problems.append(exc)

    def truncate_template() -> None:  # the model's own calls reconfigure its tokenizer
        for n in range(8, 48):
            template(texts, truncation=True, max_length=n)

    threads = [threading.Thread(target=encode) for _ in range(4)]
    threads.append(threading.Thread(target=truncate_template))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
