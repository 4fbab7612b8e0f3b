"""Imported once by the parse workers' fork server: what every parse needs is loaded there,
so each forked worker starts warm and shares it, and a file's time limit measures the file,
not a worker's first load (spaCy's model ~1 s, langdetect's 55 profiles ~1.3 s here).

A failure here only costs the warm start: each parse loads what is missing on its own and
reports its own error.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _warm() -> None:
    from langdetect import detector_factory

    from ingest.spacy_offline import use_packaged_spacy_model

    use_packaged_spacy_model()
    detector_factory.init_factory()


try:
    _warm()
except Exception as exc:  # the fork server must start whatever happens here
    log.warning("parse workers start cold: %s", exc)
