"""Text from page images: Tesseract through unstructured's `ocr_only` path, fully offline.

Before a page is read, Tesseract's orientation and script detection (OSD) turns a sideways
or upside-down scan upright and adds the language pack of the script it sees (a Chinese
page read with `eng` alone is noise), when that pack is installed.
"""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.models import Element, ParseError
from ingest.ocr_reading import best_reading
from ingest.spacy_offline import use_packaged_spacy_model

log = logging.getLogger(__name__)

# Tesseract's OSD scripts, and the language packs that read them (first installed wins).
SCRIPT_LANGUAGES: dict[str, tuple[str, ...]] = {
    "Han": ("chi_sim", "chi_tra", "jpn"),
    "Hangul": ("kor",),
    "Korean": ("kor",),  # what Tesseract 5's OSD calls a Hangul page
    "Japanese": ("jpn",),
    "Katakana": ("jpn",),
    "Hiragana": ("jpn",),
    "Arabic": ("ara", "fas", "urd"),
    "Cyrillic": ("rus", "ukr", "bul", "srp"),
    "Greek": ("ell",),
    "Hebrew": ("heb",),
    "Devanagari": ("hin", "mar", "nep"),
    "Bengali": ("ben",),
    "Tamil": ("tam",),
    "Telugu": ("tel",),
    "Thai": ("tha",),
    "Georgian": ("kat",),
    "Armenian": ("hye",),
}
_MIN_SCRIPT_CONFIDENCE = 0.5
_MIN_ORIENTATION_CONFIDENCE = 2.0
_OSD_SIDE = 1600
MAX_PIXELS = 60_000_000  # a page image past this is scaled down before it is read
# Tesseract spaces out Chinese and Japanese characters; those scripts use no spaces.
_CJK = r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
_CJK_GAP = re.compile(rf"(?<={_CJK})\s+(?={_CJK})")


@dataclass(frozen=True)
class OcrOptions:
    """What OCR reads with: `languages` are Tesseract pack names (`eng`, `chi_sim`, ...)."""

    languages: tuple[str, ...] = ("eng",)
    detect_script: bool = True
    dpi: int = 200  # with unstructured rescaling small text, as good as 300 and twice as fast
    threads: int = 2  # pages of one PDF read at once


def parse_languages(value: str) -> tuple[str, ...]:
    """`eng+chi_sim`, `eng,kor` or `eng kor` as a tuple of pack names."""
    return tuple(dict.fromkeys(part for part in re.split(r"[+,\s]+", value.strip()) if part))


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


@functools.cache
def installed_languages() -> frozenset[str]:
    """The language packs Tesseract has here (empty without Tesseract)."""
    if not tesseract_available():
        return frozenset()
    try:
        listed = subprocess.run(
            ["tesseract", "--list-langs"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    lines = (listed.stdout + listed.stderr).splitlines()
    return frozenset(line.strip() for line in lines[1:] if line.strip() and " " not in line)


def missing_languages(options: OcrOptions) -> list[str]:
    """Configured packs Tesseract lacks here (they are left out of every read)."""
    installed = installed_languages()
    return [lang for lang in options.languages if lang not in installed]


def _osd(image: Any) -> dict[str, Any]:
    """Orientation and script, or {} when there is too little text to tell."""
    import unstructured_pytesseract as tesseract

    small = image.copy()
    small.thumbnail((_OSD_SIDE, _OSD_SIDE))  # as sure at this size, and faster
    try:
        result: dict[str, Any] = tesseract.image_to_osd(small, output_type=tesseract.Output.DICT)
    except Exception:  # "Too few characters" and the like: read the page as it is
        return {}
    return result


def _languages_for(script: str | None, options: OcrOptions) -> list[str]:
    installed = installed_languages()
    chosen = [lang for lang in options.languages if lang in installed] or ["eng"]
    for lang in SCRIPT_LANGUAGES.get(script or "", ()):
        if lang in chosen:
            break
        if lang in installed:
            chosen.append(lang)
            break
    return chosen


def _bounded(image: Any) -> Any:
    from PIL import Image

    pixels = image.width * image.height
    if pixels <= MAX_PIXELS:
        return image
    scale = (MAX_PIXELS / pixels) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _opaque(image: Any) -> Any:
    """RGB or grey, transparent areas white: a screenshot's transparent background would
    otherwise turn black and hide its dark text."""
    from PIL import Image

    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit scans: to 8 bits, not clipped
        return image.point(lambda v: v / 256).convert("L")
    return image.convert("RGB")


def read_page(image: Any, page: int, options: OcrOptions) -> list[Element]:
    """The text on one page image, as elements marked `ocr`, with the page's mean word
    confidence (a page Tesseract is unsure of is read again: `ingest.ocr_reading`)."""
    from unstructured.partition.text import element_from_text

    use_packaged_spacy_model()  # its typing reads sentences with spaCy: never a download
    image = _bounded(_opaque(image))
    script = None
    if options.detect_script:
        osd = _osd(image)
        rotate = int(osd.get("rotate", 0) or 0)
        if rotate and float(osd.get("orientation_conf", 0)) >= _MIN_ORIENTATION_CONFIDENCE:
            image = image.rotate(-rotate, expand=True)  # OSD says how far clockwise
        if float(osd.get("script_conf", 0)) >= _MIN_SCRIPT_CONFIDENCE:
            script = osd.get("script")
    # A page whose script was told for sure is probed for no other (an unsure reading of
    # it is a poor scan); one whose script is unknown is, when Tesseract is unsure of it.
    probes = [] if script else _script_packs()
    reading = best_reading(image, _languages_for(script, options), probes)
    confidence = round(reading.confidence, 1)
    elements = []
    for paragraph in reading.paragraphs:
        text = _CJK_GAP.sub("", paragraph)
        if text:
            kind = type(element_from_text(text)).__name__
            elements.append(
                Element(text, kind, page, reading.languages, ocr=True, ocr_confidence=confidence)
            )
    return elements


def low_confidence_warning(name: str, elements: list[Element], floor: float) -> str | None:
    """What to tell the user about pages OCR read with a mean confidence below `floor`."""
    typed = {e.page or 1 for e in elements if not e.ocr}  # pages with a text layer: their
    # OCR'd words are labels in figures, kept beside text that was never guessed
    pages = sorted(
        {
            (e.page or 1, e.ocr_confidence)
            for e in elements
            if e.ocr_confidence is not None and (e.page or 1) not in typed
        }
    )
    low = [(page, conf) for page, conf in pages if conf < floor]
    if not low:
        return None
    said = ", ".join(f"page {page} ({conf:.0f})" for page, conf in low[:10])
    more = f" and {len(low) - 10} more" if len(low) > 10 else ""
    return (
        f"{name}: OCR is unsure of {said}{more}: mean word confidence below {floor:.0f} of "
        "100, so their text may be wrong (installing the Tesseract pack of their script, or a "
        "better scan, helps); they are kept, marked with ocr_confidence"
    )


@functools.cache
def _script_packs() -> list[str]:
    """The installed pack of each script Tesseract can tell: what a doubtful page is
    probed with."""
    installed = installed_languages()
    packs = (
        next((p for p in langs if p in installed), None) for langs in SCRIPT_LANGUAGES.values()
    )
    return list(dict.fromkeys(p for p in packs if p))


def image_pages(path: Path, name: str) -> Iterator[Any]:
    """Each page (frame) of an image file, upright as its EXIF says.

    Raises:
        ParseError: not an image Pillow can read, or one too large to decode safely.
    """
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    _register_heif()
    try:
        with Image.open(path) as image:
            for frame in ImageSequence.Iterator(image):
                yield ImageOps.exif_transpose(frame.copy())
    except Image.DecompressionBombError as exc:
        raise ParseError("too_large", f"{name}: the image is too large to read ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ParseError("unreadable", f"{name}: not a readable image ({exc})") from exc


def read_image_file(path: Path, name: str, options: OcrOptions) -> list[Element]:
    """OCR of every page of an image file (a multi-page TIFF has several)."""
    elements: list[Element] = []
    for number, frame in enumerate(image_pages(path, name), start=1):
        elements.extend(read_page(frame, number, options))
    return elements


def _register_heif() -> None:
    try:
        from pi_heif import register_heif_opener
    except ImportError:  # HEIC is then refused as unreadable, the rest still works
        return
    register_heif_opener()
