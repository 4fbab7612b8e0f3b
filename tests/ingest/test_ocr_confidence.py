"""OCR that reads what it claims to read: scans in several scripts at 150 and 300 dpi come
back in their script (read again with the right pack when detection misses it), and a page
Tesseract stays unsure of is kept, marked with its confidence, and named in a warning."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.resources import Resources
from app.service_local import LocalQuarry
from ingest.ocr import OcrOptions, installed_languages, read_page
from ingest.parsing import ParseOptions, parse_file
from ingest.pipeline import SilentObserver

from .scans import EN, FONTS, KO, TEXTS, image_only_pdf, printed_page, recovered

pytestmark = pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs tesseract")


def _needs(script: str, pack: str) -> None:
    if not FONTS[script].is_file():
        pytest.skip(f"needs the font {FONTS[script]} (.ci/run installs it)")
    if pack not in installed_languages():
        pytest.skip(f"needs tesseract-ocr-{pack.replace('_', '-')}")


@pytest.mark.parametrize(("script", "dpi"), [("ko", 150), ("ko", 300), ("zh", 150), ("ru", 300)])
def test_a_scan_in_another_script_is_read_in_it(tmp_path: Path, script: str, dpi: int) -> None:
    text, pack = TEXTS[script]
    _needs(script, pack)
    scan = image_only_pdf(tmp_path / "terms.pdf", [printed_page(text, script, dpi)], dpi)
    elements = parse_file(scan, options=ParseOptions())  # eng configured, as by default
    read = " ".join(e.text for e in elements)
    assert recovered(text, read, script) >= 0.8, read
    assert all(e.ocr and pack in e.languages for e in elements)
    assert all(e.ocr_confidence is not None and e.ocr_confidence >= 75 for e in elements)


def test_a_page_whose_script_goes_undetected_is_read_again_with_its_pack() -> None:
    _needs("ko", "kor")
    page = printed_page(KO, "ko", 150)
    elements = read_page(page, 1, OcrOptions(("eng",), detect_script=False))
    assert recovered(KO, " ".join(e.text for e in elements), "ko") >= 0.8
    assert elements[0].languages == ("eng", "kor") and elements[0].ocr_confidence >= 75


def test_an_unsure_page_is_kept_marked_and_named(tmp_path: Path, resources: Resources) -> None:
    clear = printed_page(EN, "en", 200)
    blurred = printed_page(EN, "en", 200, blur=4.0)  # a bad scan: Tesseract guesses
    image_only_pdf(tmp_path / "scan.pdf", [clear, blurred], 200)
    report = LocalQuarry(resources).ingest(
        [(tmp_path / "scan.pdf", "scan.pdf")],
        collection="c",
        metadata={},
        force=False,
        observer=SilentObserver(),
    )
    assert report.ingested == 1, report.errors  # kept, not refused
    (warning,) = report.warnings
    assert warning.startswith("scan.pdf: ") and "page 2" in warning and "page 1" not in warning
    chunks = resources.store.chunks("c", resources.store.documents("c")[0].doc_id)
    marks = [c.ocr_confidence for c in chunks if c.ocr]
    assert len(marks) == len(chunks) and all(m is not None for m in marks)
    assert max(m or 0 for m in marks) >= 75 and min(m or 100 for m in marks) < 60
    (hit,) = resources.search_service("c").search("c", "sourdough starter", top_k=1).hits
    assert hit.ocr_confidence in {c.ocr_confidence for c in chunks}
