"""Documents without a text layer, made as a scanner or a phone would: pages of text
rendered to pixels, then saved as images or wrapped as an image-only PDF; and legacy Office
files written by LibreOffice."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .documents import SENTENCE, write_document

DPI = 200


def text_pdf(path: Path, paragraphs: list[str]) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    for text in paragraphs:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


def page_images(paragraphs: list[str], folder: Path) -> list[Any]:
    """Each paragraph on its own page, as a grey-scale scan at DPI."""
    import pypdfium2 as pdfium

    source = text_pdf(folder / "printed.pdf", paragraphs)
    document = pdfium.PdfDocument(str(source))
    try:
        return [page.render(scale=DPI / 72).to_pil().convert("L") for page in document]
    finally:
        document.close()


def scanned_pdf(path: Path, paragraphs: list[str], rotate: int = 0) -> Path:
    """An image-only PDF, one scanned page per paragraph (turned `rotate` degrees)."""
    pages = [image.rotate(rotate, expand=True) for image in page_images(paragraphs, path.parent)]
    pages[0].save(path, format="PDF", resolution=DPI, save_all=True, append_images=pages[1:])
    return path


def mixed_pdf(path: Path, typed: str, scanned: str) -> Path:
    """Page 1 with a text layer, page 2 a scan."""
    from pypdf import PdfReader, PdfWriter

    text = text_pdf(path.parent / "typed.pdf", [typed])
    scan = scanned_pdf(path.parent / "scan.pdf", [scanned])
    writer = PdfWriter()
    for source in (text, scan):
        for page in PdfReader(str(source)).pages:
            writer.add_page(page)
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def image_file(path: Path, text: str = SENTENCE) -> Path:
    """A photo-like image of a page holding `text`, in the format the suffix names."""
    image = page_images([text], path.parent)[0]
    if path.suffix.lower() in (".jpg", ".jpeg", ".webp"):
        image.convert("RGB").save(path, quality=85)
    else:
        image.save(path)
    return path


_LEGACY = {  # legacy suffix -> (modern source, LibreOffice filter)
    "doc": ("docx", "MS Word 97"),
    "ppt": ("pptx", "MS PowerPoint 97"),
    "xls": ("xlsx", "MS Excel 97"),
    "odp": ("pptx", "impress8"),
    "ods": ("xlsx", "calc8"),
}


def legacy_file(folder: Path, ext: str, text: str = SENTENCE) -> Path:
    """A real legacy Office file, saved by LibreOffice from a modern one."""
    modern, filter_name = _LEGACY[ext]
    work = folder / f"make-{ext}"
    work.mkdir(parents=True)
    source = write_document(work, modern, text)
    subprocess.run(
        [
            shutil.which("soffice") or "soffice",
            f"-env:UserInstallation={(work / 'profile').as_uri()}",
            "--headless",
            "--convert-to",
            f"{ext}:{filter_name}",
            "--outdir",
            str(folder),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    return folder / f"{source.stem}.{ext}"


FONTS = {  # Debian's fonts-nanum, fonts-wqy-zenhei, fonts-dejavu-core
    "ko": Path("/usr/share/fonts/truetype/nanum/NanumGothic.ttf"),
    "zh": Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    "ru": Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    "en": Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
}


def printed_page(text: str, script: str, dpi: int, blur: float = 0.0) -> Any:
    """An A4 page of `text` in 11-point type, as a grey scan at `dpi` (blurred `blur` px)."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    page = Image.new("L", (round(8.27 * dpi), round(11.69 * dpi)), 255)
    draw = ImageDraw.Draw(page)
    size = round(11 / 72 * dpi)
    font = ImageFont.truetype(str(FONTS[script]), size)
    y = margin = round(0.8 * dpi)
    for line in textwrap.wrap(text, 34 if script in ("ko", "zh") else 70):
        draw.text((margin, y), line, font=font, fill=0)
        y += round(size * 1.6)
    return page.filter(ImageFilter.GaussianBlur(blur)) if blur else page


def image_only_pdf(path: Path, pages: list[Any], dpi: int) -> Path:
    """`pages` as an image-only PDF at `dpi`, as a scanner saves them."""
    pages[0].save(path, format="PDF", resolution=dpi, save_all=True, append_images=pages[1:])
    return path


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


def recovered(printed: str, read: str, script: str) -> float:
    """The share of the printed words (Cyrillic) or characters (Hangul, Han) read back."""
    if script == "ru":
        wanted = set(re.findall(r"\w{4,}", printed.lower()))
        return len(wanted & set(re.findall(r"\w{4,}", read.lower()))) / len(wanted)
    wanted = {c for c in printed if c.isalpha() and not c.isascii()}
    return len(wanted & set(read)) / len(wanted)
