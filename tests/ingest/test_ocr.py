"""Scans, photos of pages and legacy Office files yield their words (real Tesseract and
LibreOffice); without those tools the files are refused, naming what is missing."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from ingest.models import ParseError
from ingest.ocr import OcrOptions
from ingest.office_convert import convert
from ingest.parse_pool import ParseLimits, ParsePool
from ingest.parsing import ParseOptions, parse_file

from ..conftest import SHARED
from .documents import SENTENCE
from .scans import image_file, legacy_file, mixed_pdf, scanned_pdf

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="needs tesseract (scripts/system-packages.sh)"
)
needs_soffice = pytest.mark.skipif(
    shutil.which("soffice") is None, reason="needs LibreOffice (scripts/system-packages.sh)"
)
DOCS = SHARED / "docs"

OTTER = "Sea otters hold hands while they sleep so that the current cannot pull them apart."
KILN = "The anagama kiln was fired for five days with red pine from the northern ridge."


def words(elements: list) -> str:
    return " ".join(" ".join(e.text.split()) for e in elements).lower()


@needs_tesseract
def test_a_scanned_pdf_is_read_page_by_page(tmp_path: Path) -> None:
    path = scanned_pdf(tmp_path / "scan.pdf", [OTTER, KILN])
    elements = parse_file(path)
    assert all(e.ocr for e in elements)
    by_page = {page: words([e for e in elements if e.page == page]) for page in (1, 2)}
    assert "sea otters hold hands" in by_page[1] and "anagama kiln" in by_page[2]
    assert "kiln" not in by_page[1]


@needs_tesseract
def test_a_sideways_scan_is_turned_upright(tmp_path: Path) -> None:
    elements = parse_file(scanned_pdf(tmp_path / "sideways.pdf", [OTTER], rotate=90))
    assert "sea otters hold hands while they sleep" in words(elements)


@needs_tesseract
def test_a_partly_scanned_pdf_gets_both_paths(tmp_path: Path) -> None:
    elements = parse_file(mixed_pdf(tmp_path / "mixed.pdf", OTTER, KILN))
    typed = [e for e in elements if e.page == 1]
    scanned = [e for e in elements if e.page == 2]
    assert "sea otters" in words(typed) and not any(e.ocr for e in typed)
    assert "anagama kiln" in words(scanned) and all(e.ocr for e in scanned)


@needs_tesseract
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tiff", ".bmp", ".webp"])
def test_images_are_read(tmp_path: Path, suffix: str) -> None:
    elements = parse_file(image_file(tmp_path / f"photo{suffix}"))
    assert "zebra finch sings at dawn" in words(elements) and all(e.ocr for e in elements)


@needs_tesseract
def test_every_page_of_a_multipage_tiff(tmp_path: Path) -> None:
    from .scans import page_images

    pages = page_images([OTTER, KILN], tmp_path)
    path = tmp_path / "fax.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    elements = parse_file(path)
    assert {e.page for e in elements} == {1, 2} and "anagama kiln" in words(elements)


@needs_soffice
@pytest.mark.parametrize("ext", ["doc", "ppt", "xls", "odp", "ods"])
def test_legacy_office_files_are_converted(tmp_path: Path, ext: str) -> None:
    path = legacy_file(tmp_path, ext)
    assert "zebra finch" in words(parse_file(path, f"old.{ext}"))


@needs_soffice
def test_conversions_run_side_by_side(tmp_path: Path) -> None:
    """Each conversion has its own LibreOffice profile: two at once both finish."""
    sources = [legacy_file(tmp_path / str(i), "doc", f"{SENTENCE} Copy {i}.") for i in (1, 2)]
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = words(parse_file(sources[i - 1]))

    threads = [threading.Thread(target=run, args=(i,)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert "copy 1" in results[1] and "copy 2" in results[2]


@needs_soffice
def test_a_conversion_past_its_limit_is_killed(tmp_path: Path) -> None:
    path = legacy_file(tmp_path, "doc")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ParseError) as info:
        convert(path, "slow.doc", work, timeout_s=0.05)
    assert info.value.code == "timeout" and "slow.doc" in info.value.message
    left = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(work) in " ".join(p.info["cmdline"] or [])
    ]
    assert not left, left


def test_without_the_tools_the_formats_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    doc = tmp_path / "old.doc"
    doc.write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 100)
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes((DOCS / "non_text_searchable.pdf").read_bytes())
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    for path, tool in ((image, "Tesseract"), (doc, "LibreOffice"), (pdf, "Tesseract")):
        with pytest.raises(ParseError) as info:
            parse_file(path)
        assert info.value.code == "unsupported_here", path
        assert path.name in info.value.message and tool in info.value.message


def test_a_pdf_gets_more_time_per_page(tmp_path: Path) -> None:
    from .scans import text_pdf

    pool = ParsePool(ParseLimits(workers=1, timeout_s=60, ocr_page_s=10))
    pdf = text_pdf(tmp_path / "three.pdf", ["one", "two", "three"])
    text = tmp_path / "notes.txt"
    text.write_text("notes")
    if shutil.which("pdfinfo"):
        assert pool.time_limit(pdf) == 90
    assert pool.time_limit(text) == 60


@needs_tesseract
def test_the_script_of_a_page_adds_its_language(tmp_path: Path) -> None:
    """`eng` configured; a Chinese page is still read as Chinese when the pack is here: by
    its detected script, or, without detection, by reading the unsure page again."""
    from ingest.ocr import installed_languages

    if "chi_sim" not in installed_languages():
        pytest.skip("needs tesseract-ocr-chi-sim")
    text = words(parse_file(DOCS / "chi_sim_image.jpeg", options=ParseOptions()))
    assert "肌肤" in text and "适用人群" in text  # and no spaces between the characters
    plain = words(
        parse_file(
            DOCS / "chi_sim_image.jpeg",
            options=ParseOptions(ocr=OcrOptions(("eng",), detect_script=False)),
        )
    )
    assert "肌肤" in plain and "适用人群" in plain


@needs_tesseract
@needs_soffice
@pytest.mark.corpus
@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("non_text_searchable.pdf", "example of a non-text-searchable pdf"),
        ("loremipsum-flat.pdf", "lorem ipsum dolor sit amet"),
        ("english-and-korean.png", "rules and instructions"),
        ("fake.doc", "lorem ipsum dolor sit amet"),
        ("fake-power-point.ppt", "adding a bullet slide"),
        ("tests-example.xls", "multiple choice"),
    ],
)
def test_shared_scans_and_legacy_files(name: str, phrase: str) -> None:
    if not (DOCS / name).is_file():
        pytest.skip("../shared/docs is absent")
    assert phrase in words(parse_file(DOCS / name))


def test_soffice_is_not_left_running() -> None:
    """Run last in this module: no conversion left a LibreOffice process behind. A
    conversion running now (tests run in parallel) ends within its time limit; one left
    behind never does."""
    found = subprocess.run(["pgrep", "-f", "quarry-convert-"], capture_output=True, check=False)
    pids = [int(pid) for pid in found.stdout.split()]
    deadline = time.monotonic() + 150
    while (alive := [pid for pid in pids if psutil.pid_exists(pid)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert not alive, alive


@needs_tesseract
@needs_soffice
def test_scans_photos_and_legacy_files_are_found_by_search(tmp_path: Path, resources) -> None:  # type: ignore[no-untyped-def]
    from ingest.sources import FileSource

    from .documents import write_document

    harbor = "The harbour master logs every trawler that passes the breakwater after midnight."
    files = [
        scanned_pdf(tmp_path / "scan.pdf", [OTTER, KILN]),
        image_file(tmp_path / "photo.jpg", harbor),
        legacy_file(tmp_path, "doc"),
        write_document(tmp_path, "txt", "Quarterly budget figures for the municipal library."),
        write_document(tmp_path, "md", "A recipe for sourdough bread with a long cold proof."),
    ]
    report = resources.pipeline("scans").run([FileSource(f, f.name) for f in files])
    assert report.ingested == len(files), report.errors
    service = resources.search_service("scans")
    for sentence, source, ocr in (
        (OTTER, "scan.pdf", True),
        (KILN, "scan.pdf", True),
        (harbor, "photo.jpg", True),
        (SENTENCE, "notes.doc", False),
    ):
        hits = service.search("scans", sentence, top_k=3).hits
        assert hits[0].source == source, (sentence, [h.source for h in hits])
        assert hits[0].ocr is ocr


def test_the_tools_report_says_what_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.ocr import installed_languages
    from ingest.parsing import tools_report

    options = OcrOptions(("eng", "xyz_not_a_pack"))
    here = tools_report(options)
    assert here["ok"] is True
    if here["tesseract"]:
        assert "xyz_not_a_pack" in here["reason"] and "xyz_not_a_pack" not in here["ocr_languages"]
    monkeypatch.setenv("PATH", "/nonexistent")
    installed_languages.cache_clear()
    try:
        bare = tools_report(options)
    finally:
        installed_languages.cache_clear()
    assert bare["tesseract"] is False and bare["libreoffice"] is False
    assert ".png" in bare["reason"] and ".doc" in bare["reason"]


@needs_tesseract
def test_a_transparent_screenshot_is_read_on_white(tmp_path: Path) -> None:
    from PIL import Image

    from .scans import page_images

    grey = page_images([OTTER], tmp_path)[0]
    # dark text on a fully transparent background: what PIL's plain RGB conversion turns black
    text_alpha = grey.point(lambda v: 255 - v)
    clear = Image.new("RGBA", grey.size, (0, 0, 0, 0))
    clear.putalpha(text_alpha)
    path = tmp_path / "screenshot.png"
    clear.save(path)
    assert "sea otters hold hands" in words(parse_file(path))
