"""One page image read by Tesseract, with how sure Tesseract is of what it read.

A page is read in one Tesseract pass (`image_to_data`: the words, their paragraphs and
their confidences), zoomed first as unstructured zooms it when its text is too small or too
large for Tesseract, and its paragraphs typed as unstructured types text (titles, list
items, narrative). A reading Tesseract is unsure of (mean word confidence below
`REREAD_BELOW`) is read again: laid out as one column where it found almost nothing
(sparse pages defeat Tesseract's automatic layout), and with the installed pack of the
script a quick probe of the page's densest band reads far better; the better reading is
kept. What stays unsure is kept, with its confidence, for the caller to mark.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

REREAD_BELOW = 75.0  # mean word confidence (0-100) under which a page is read again
CONFIDENT_WORD = 50.0  # words at or above this count toward a reading's score
PROBE_BAND = 0.12  # the share of the page's height a script probe reads
PROBE_MIN_PX = 400  # ... and at least this many rows (a few lines of text), or all of it
PROBE_SURE, PROBE_MARGIN = 60.0, 20.0  # a probe this sure, this far above the reading wins
FEW_WORDS = 20  # a page with ink but fewer words was likely laid out wrong
MIN_COVERAGE = 0.75  # ... as was one whose words hold less of its ink than this
AUTO_LAYOUT, ONE_COLUMN = 3, 4  # Tesseract's page segmentation modes


@dataclass(frozen=True)
class Reading:
    """A page's paragraphs, the confidence (0-100) of each word, and the packs used."""

    paragraphs: tuple[str, ...]
    confidences: tuple[float, ...]
    languages: tuple[str, ...]
    coverage: float = 1.0  # the share of the page's ink inside the words it read

    @property
    def confidence(self) -> float:
        """Mean word confidence; 0 when nothing was read."""
        return statistics.fmean(self.confidences) if self.confidences else 0.0

    @property
    def score(self) -> float:
        """How much confident text it holds: the better of two readings has more."""
        return sum(c for c in self.confidences if c >= CONFIDENT_WORD)


def read(image: Any, languages: list[str], layout: int = AUTO_LAYOUT) -> Reading:
    """The page as Tesseract reads it with `languages`, zoomed as unstructured would."""
    data, heights = _data(image, languages, layout)
    zoom = _zoom(heights, image)
    if zoom != 1.0:
        from PIL import Image

        size = (max(1, round(image.width * zoom)), max(1, round(image.height * zoom)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        data, _ = _data(image, languages, layout)
    return _reading(data, languages, _coverage(image, data))


def best_reading(image: Any, languages: list[str], candidates: list[str]) -> Reading:
    """The page read with `languages`, and read again where Tesseract is unsure of it:
    with the pack of another script (of `candidates`: empty where the page's script is
    known) when a probe of the page reads far better with it."""
    if not _has_ink(image):
        return read(image, languages)
    best = _laid_out(image, languages)
    if best.confidence >= REREAD_BELOW:
        return best
    pack = _likely_pack(image, [p for p in candidates if p not in languages], best.confidence)
    if pack is None:
        return best
    again = _laid_out(image, [*languages, pack])
    return again if again.score > best.score else best


def _laid_out(image: Any, languages: list[str]) -> Reading:
    """Read with Tesseract's automatic layout, and again as one column where that left
    much of the page's ink unread (sparse pages defeat the automatic layout, which then
    takes lines of text for pictures); the reading with more confident words is kept."""
    reading = read(image, languages)
    if len(reading.confidences) >= FEW_WORDS and reading.coverage >= MIN_COVERAGE:
        return reading
    again = read(image, languages, ONE_COLUMN)
    return again if again.score > reading.score else reading


def _likely_pack(image: Any, packs: list[str], current: float) -> str | None:
    """The pack whose script reads the page's densest band best, where it reads it far
    better than the current reading (a blurred page reads badly in every script)."""
    if not packs:
        return None
    band = _densest_band(image)
    probes = {pack: read(band, [pack], ONE_COLUMN).confidence for pack in packs}
    pack = max(probes, key=probes.__getitem__)
    sure = probes[pack] >= PROBE_SURE and probes[pack] >= current + PROBE_MARGIN
    return pack if sure else None


def _data(image: Any, languages: list[str], layout: int) -> tuple[dict[str, list[Any]], list[int]]:
    import unstructured_pytesseract as tesseract

    data: dict[str, list[Any]] = tesseract.image_to_data(
        image,
        lang="+".join(languages),
        config=f"--psm {layout}",
        output_type=tesseract.Output.DICT,
    )
    heights = [
        int(h) for h, word in zip(data["height"], data["text"], strict=True) if str(word).strip()
    ]
    return data, heights


def _zoom(heights: list[int], image: Any) -> float:
    """unstructured's zoom: text this tall (its median) is read best at the optimum height."""
    from unstructured.partition.utils.config import env_config

    if not heights:
        return 1.0
    height = statistics.median(heights)
    if env_config.TESSERACT_MIN_TEXT_HEIGHT <= height <= env_config.TESSERACT_MAX_TEXT_HEIGHT:
        return 1.0
    zoom = round(env_config.TESSERACT_OPTIMUM_TEXT_HEIGHT / height, 1)
    largest = (40_000_000 / max(1, image.width * image.height)) ** 0.5  # no giant pages
    return max(0.1, min(zoom, largest))


def _coverage(image: Any, data: dict[str, list[Any]]) -> float:
    """The share of the dark pixels of `image` that lie inside the boxes of words read."""
    import numpy as np

    ink = np.asarray(image.convert("L")) < 128
    total = int(ink.sum())
    if not total:
        return 1.0
    inside = np.zeros_like(ink)
    boxes = zip(data["left"], data["top"], data["width"], data["height"], data["text"], strict=True)
    for left, top, width, height, word in boxes:
        if str(word).strip():
            inside[int(top) : int(top) + int(height), int(left) : int(left) + int(width)] = True
    return float((ink & inside).sum()) / total


def _reading(data: dict[str, list[Any]], languages: list[str], coverage: float) -> Reading:
    """Words into lines, lines into paragraphs (joined with spaces, as unstructured merges
    the regions of one paragraph), in Tesseract's reading order."""
    paragraphs: dict[tuple[int, int, int], list[str]] = {}
    confidences = []
    rows = zip(
        data["text"],
        data["conf"],
        data["page_num"],
        data["block_num"],
        data["par_num"],
        strict=True,
    )
    for word, conf, page, block, par in rows:
        word = str(word).strip()
        if not word or float(conf) < 0:
            continue
        paragraphs.setdefault((page, block, par), []).append(word)
        confidences.append(float(conf))
    texts = tuple(" ".join(words) for words in paragraphs.values())
    return Reading(texts, tuple(confidences), tuple(languages), coverage)


def _has_ink(image: Any) -> bool:
    """Whether the page holds anything dark enough to be text (a blank page is not reread)."""
    grey = image.convert("L")
    histogram = grey.histogram()
    dark = sum(histogram[:128])
    return dark > 0.001 * grey.width * grey.height


def _densest_band(image: Any) -> Any:
    """The band of the page (`PROBE_BAND` of its height, `PROBE_MIN_PX` at least) with the
    most dark pixels."""
    import numpy as np

    grey = np.asarray(image.convert("L"))
    ink = (grey < 128).sum(axis=1)
    band = max(int(len(ink) * PROBE_BAND), min(len(ink), PROBE_MIN_PX))
    sums = np.convolve(ink, np.ones(band, dtype=np.int64), mode="valid")
    top = int(sums.argmax()) if len(sums) else 0
    return image.crop((0, top, image.width, min(image.height, top + band)))
