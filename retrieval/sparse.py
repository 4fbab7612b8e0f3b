"""BM25 term weights as sparse vectors, in Qdrant's own BM25 tokenisation (qdrant-edge).

Documents get BM25 term-frequency weights (k, b, average length); a query gets weight 1
per distinct term; the store multiplies by IDF at query time (the sparse vector's IDF
modifier), so `query . document` is the document's BM25 score. The same vectors go to the
embedded store and to a Qdrant server.

Tokens come from the multilingual tokenizer (word boundaries for scripts with spaces,
dictionary segmentation for Chinese, Japanese and Korean), lower-cased, with English stop
words removed and English words stemmed (Snowball); Cyrillic, Greek and Arabic-script words
are stemmed by their script's Snowball stemmer first (`retrieval.analysis`). A collection
records its scheme and is written and searched in it; `quarry backfill-sparse` moves an
older collection to the current one.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import qdrant_edge as qe

from embedding.errors import QuarryError
from retrieval.analysis import stem_by_script

SPARSE_VECTOR = "bm25"  # the sparse vector's name in every collection that has one
# BM25's expected document length, in its tokens (stop words dropped): a passage or a chunk
# of a few hundred model tokens holds about this many. It weighs long chunks against short.
AVERAGE_LENGTH = 100
# What the stored weights mean: a collection records it and is written and searched in it.
BM25_SCHEME = "qdrant-bm25/multilingual/english+script-stems/k1.2-b0.75-avg100"
ENGLISH_ONLY_SCHEME = "qdrant-bm25/multilingual/english/k1.2-b0.75-avg100"  # before 2026-12
AVG256_SCHEME = "qdrant-bm25/multilingual/english/k1.2-b0.75-avg256"  # the first one
# Every scheme a collection may record -> how its text is analysed first, and its BM25
# average length: older collections keep being written and searched as they were built.
SCHEMES: dict[str, tuple[Callable[[str], str], int]] = {
    BM25_SCHEME: (stem_by_script, AVERAGE_LENGTH),
    ENGLISH_ONLY_SCHEME: (str, AVERAGE_LENGTH),
    AVG256_SCHEME: (str, 256),
}


class UnknownSchemeError(QuarryError):
    """A collection's BM25 vectors are in a scheme this Quarry does not know (a newer
    one's): its sparse search and writes wait for `backfill-sparse`."""

    code = "sparse_scheme_unknown"
    status = 409


@dataclass(frozen=True)
class SparseVec:
    """Non-zero term weights: term hash -> weight."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __bool__(self) -> bool:
        return bool(self.indices)


class Bm25Encoder:
    """Thread-safe (one model per thread); cheap to build. Encodes in `scheme` (a
    collection's own, one of `SCHEMES`)."""

    def __init__(self, scheme: str = BM25_SCHEME) -> None:
        if scheme not in SCHEMES:
            raise UnknownSchemeError(
                f"BM25 vectors in an unknown scheme {scheme!r}: run `quarry backfill-sparse` "
                "on the collection to rebuild them in this version's",
                detail={"scheme": scheme},
            )
        self.scheme = scheme
        self._analyse, self._average = SCHEMES[scheme]
        self._local = threading.local()

    def _model(self) -> qe.Bm25:
        model = getattr(self._local, "model", None)
        if model is None:
            config = qe.Bm25Config(
                k=1.2,
                b=0.75,
                avg_len=self._average,
                tokenizer=qe.TokenizerType.Multilingual,
                language="english",
            )
            model = self._local.model = qe.Bm25(config)
        return model

    def documents(self, texts: Sequence[str]) -> list[SparseVec]:
        model = self._model()
        return [_vec(model.embed_document(self._analyse(text))) for text in texts]

    def queries(self, texts: Sequence[str]) -> list[SparseVec]:
        model = self._model()
        return [_vec(model.embed_query(self._analyse(text))) for text in texts]


def _vec(vector: qe.SparseVector) -> SparseVec:
    return SparseVec(tuple(vector.indices), tuple(vector.values))


@functools.cache
def encoder(scheme: str) -> Bm25Encoder:
    """The shared encoder of `scheme` (thread-safe).

    Raises:
        UnknownSchemeError: a scheme this version does not know.
    """
    return Bm25Encoder(scheme)
