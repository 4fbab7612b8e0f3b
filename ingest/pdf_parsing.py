"""PDFs page by page: the text layer where a page has one, OCR where it is a scan.

Each page is looked at first (pdfium: its words, how much of it images cover, whether its
text is visible). A page without words, or one largely covered by images with visible text
beside them (a letterhead over a scanned body, a figure full of labels), is also read with
OCR; on such a page OCR lines already in the text layer are dropped. A page whose only text
is invisible is a scan that was OCR'd before: its text layer is trusted.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.models import Element, ParseError
from ingest.ocr import OcrOptions, read_page, tesseract_available
from ingest.unstructured_elements import to_elements

log = logging.getLogger(__name__)

IMAGE_COVER_FOR_OCR = 0.3  # share of a page's area under images that makes it worth OCR
_NEW_WORDS_TO_KEEP = 0.5  # an OCR line on a page with text is kept when this much is new
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class PagePlan:
    number: int
    text: str  # pdfium's text layer (the fallback reader's, when pdfminer gives up)
    words: int
    image_cover: float
    visible_text: bool

    @property
    def needs_ocr(self) -> bool:
        if self.words == 0:
            return True
        return self.visible_text and self.image_cover >= IMAGE_COVER_FOR_OCR


def plan_pages(path: Path) -> list[PagePlan] | None:
    """What each page holds, or None when pdfium cannot read the file (the text parser
    then decides alone)."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        document = pdfium.PdfDocument(str(path))
    except Exception:  # pdfium's error is no better than the text parser's
        return None
    plans = []
    try:
        for index in range(len(document)):
            page = document[index]
            width, height = page.get_size()
            text = page.get_textpage().get_text_range().replace("\r\n", "\n")
            covered = 0.0
            for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=8):
                left, bottom, right, top = image.get_bounds()
                covered += max(0.0, min(right, width) - max(left, 0.0)) * max(
                    0.0, min(top, height) - max(bottom, 0.0)
                )
            visible = any(
                pdfium_c.FPDFTextObj_GetTextRenderMode(text.raw)
                != pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE
                for text in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_TEXT], max_depth=8)
            )
            area = max(width * height, 1.0)
            plans.append(
                PagePlan(index + 1, text, len(text.split()), min(covered / area, 1.0), visible)
            )
    except Exception as exc:  # a page pdfium chokes on: let the text parser decide
        log.info("%s: page analysis stopped (%s)", path.name, exc)
        return None
    finally:
        document.close()
    return plans


def _render(document: Any, lock: threading.Lock, number: int, dpi: int) -> Any:
    with lock:  # pdfium is not thread-safe
        return document[number - 1].render(scale=dpi / 72).to_pil()


def _novel(element: Element, known: set[str]) -> bool:
    words = [w.lower() for w in _WORD.findall(element.text)]
    if not words:
        return False
    new = sum(1 for w in words if w not in known)
    return new / len(words) >= _NEW_WORDS_TO_KEEP


def _ocr_pages(path: Path, plans: list[PagePlan], options: OcrOptions) -> dict[int, list[Element]]:
    """Pages OCR'd `options.threads` at a time (Tesseract runs in its own processes); each
    page is rendered only when its turn comes, so a 500-page scan never holds 500 images."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(path))
    lock = threading.Lock()

    def read(number: int) -> list[Element]:
        try:
            return read_page(_render(document, lock, number, options.dpi), number, options)
        except Exception as exc:  # one page that cannot be read must not lose the others
            log.warning("%s: page %d could not be OCR'd (%s)", path.name, number, exc)
            return []

    try:
        with ThreadPoolExecutor(max(1, options.threads), thread_name_prefix="ocr") as pool:
            numbers = [plan.number for plan in plans]
            return dict(zip(numbers, pool.map(read, numbers), strict=True))
    finally:
        with lock:
            document.close()


def parse_pdf(
    path: Path, name: str, text_layer: Callable[[], list[Element]], ocr: OcrOptions
) -> list[Element]:
    """Elements of every page: `text_layer()` (unstructured's fast strategy) for pages with
    text, OCR for scanned pages, both for mixed ones.

    Raises:
        ParseError: encrypted, unreadable, no text at all, or a scan with no OCR here.
    """
    pdf_guard(path, name)
    plans = plan_pages(path)
    to_read = [p for p in plans or [] if p.needs_ocr]
    all_scans = plans is not None and len(to_read) == len(plans)
    elements = [] if all_scans else text_layer()
    if not elements and not all_scans:
        elements = _text_layer_fallback(path, plans)
    if to_read and not tesseract_available():
        if elements:
            log.warning(
                "%s: %d scanned pages skipped: Tesseract is not installed", name, len(to_read)
            )
            return elements
        raise ParseError(
            "unsupported_here",
            f"{name}: the PDF has no text layer (scanned or image-only); reading it needs "
            "Tesseract OCR (tesseract), which is not installed",
            status=415,
        )
    if to_read:
        elements = _merge(elements, _ocr_pages(path, to_read, ocr))
    if not elements:
        raise ParseError("no_text", f"{name}: no text could be found in the PDF, even with OCR")
    return elements


def _merge(text: list[Element], read: dict[int, list[Element]]) -> list[Element]:
    """Text-layer elements in their order, each OCR'd page's new lines after its own."""
    by_page: dict[int | None, list[Element]] = {}
    for element in text:
        by_page.setdefault(element.page, []).append(element)
    for number, found in read.items():
        known = {w.lower() for e in by_page.get(number, []) for w in _WORD.findall(e.text)}
        by_page.setdefault(number, []).extend(e for e in found if _novel(e, known))
    pages = sorted(p for p in by_page if p is not None)
    return [e for p in pages for e in by_page[p]] + by_page.get(None, [])


def pdf_guard(path: Path, name: str) -> None:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("encrypted", f"{name}: the PDF is password-protected")
    except ParseError:
        raise
    except (PdfReadError, ValueError, OSError) as exc:
        raise ParseError("unreadable", f"{name}: not a readable PDF ({exc})") from exc


def _pypdf_texts(path: Path) -> list[str]:
    """Each page's text through pypdf, which reads some files pdfium refuses; a page that
    cannot be read is empty: one broken page must not lose the rest."""
    from pypdf import PdfReader

    texts = []
    for page in PdfReader(str(path)).pages:
        try:
            texts.append(page.extract_text() or "")
        except Exception:
            texts.append("")
    return texts


def _text_layer_fallback(path: Path, plans: list[PagePlan] | None) -> list[Element]:
    """Text that unstructured's PDF reader (pdfminer) gave up on, page by page, as
    unstructured's plain-text elements: pdfium's text, read while planning the pages (tens
    of times faster than pypdf, the same text), or pypdf's where pdfium refused the file."""
    from unstructured.partition.text import partition_text

    texts = [plan.text for plan in plans] if plans is not None else _pypdf_texts(path)
    elements: list[Element] = []
    for number, text in enumerate(texts, start=1):
        if text.strip():
            for element in to_elements(partition_text(text=text)):
                elements.append(Element(element.text, element.type, number, element.languages))
    if elements:
        log.info("%s: recovered the text layer after unstructured found none", path.name)
    return elements
