"""OCR that reads what it claims to read: scans in several scripts at 150 and 300 dpi come
back in their script (read again with the right pack when detection misses it), and a page
Tesseract stays unsure of is kept, marked with its confidence, and named in a warning."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from app.resources import Resources
from app.service_local import LocalQuarry
from ingest.ocr import OcrOptions, installed_languages, read_page
from ingest.parsing import ParseOptions, parse_file
from ingest.pipeline import SilentObserver

from .scans import FONTS, image_only_pdf, printed_page

KO = (
    "신용카드 회원약관 제1조 목적 이 약관은 카드회사와 회원 사이의 신용카드 이용에 관한 "
    "권리와 의무를 정함을 목적으로 합니다. 제2조 연회비 회원은 카드 발급 시 연회비를 "
    "납부하여야 하며 해외 이용 수수료는 이용금액의 1.5%입니다."
)
ZH = (
    "信用卡会员条款 第一条 目的 本条款规定信用卡公司与会员之间关于信用卡使用的权利和义务。"
    "第二条 年费 会员在发卡时应缴纳年费，境外使用手续费为使用金额的百分之一点五。"  # noqa: RUF001
)
RU = (
    "Условия использования кредитной карты. Статья первая определяет права и обязанности "
    "банка и держателя карты. Статья вторая: держатель оплачивает годовое обслуживание."
)
EN = "Sourdough starter needs feeding twice a day and a warm kitchen to rise well. " * 24
TEXTS = {"ko": (KO, "kor"), "zh": (ZH, "chi_sim"), "ru": (RU, "rus")}

pytestmark = pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs tesseract")


def _needs(script: str, pack: str) -> None:
    if not FONTS[script].is_file():
        pytest.skip(f"needs the font {FONTS[script]} (.ci/run installs it)")
    if pack not in installed_languages():
        pytest.skip(f"needs tesseract-ocr-{pack.replace('_', '-')}")


def recovered(printed: str, read: str, script: str) -> float:
    """The share of the printed words (Cyrillic) or characters (Hangul, Han) read back."""
    if script == "ru":
        wanted = set(re.findall(r"\w{4,}", printed.lower()))
        return len(wanted & set(re.findall(r"\w{4,}", read.lower()))) / len(wanted)
    wanted = {c for c in printed if c.isalpha() and not c.isascii()}
    return len(wanted & set(read)) / len(wanted)


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
