"""Every supported format parses to the text it holds; bad files fail with a named reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.models import ParseError
from ingest.parsing import parse_file

from .documents import SENTENCE, WRITERS, write_document


def joined(path: Path) -> str:
    return " ".join(" ".join(e.text.split()) for e in parse_file(path))


@pytest.mark.parametrize("ext", sorted(WRITERS))
def test_every_format_yields_its_text(tmp_path: Path, ext: str) -> None:
    path = write_document(tmp_path, ext)
    elements = parse_file(path)
    assert "zebra finch" in joined(path), f"{ext}: text lost"
    assert all(e.type for e in elements)


def test_pdf_keeps_page_numbers(tmp_path: Path) -> None:
    elements = parse_file(write_document(tmp_path, "pdf"))
    pages = {e.page for e in elements}
    assert pages == {1, 2}
    assert any("zebra finch" in e.text and e.page == 1 for e in elements)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "cp1252", "latin-1"])
def test_text_encodings_are_detected(tmp_path: Path, encoding: str) -> None:
    text = "Café crème brûlée at the Großmarkt, naïve façade. " + SENTENCE
    path = tmp_path / f"enc-{encoding}.txt"
    path.write_bytes(text.encode(encoding))
    assert "Café crème brûlée" in joined(path)


def test_cp1252_html_without_charset(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_bytes(
        "<html><body><p>Grüße aus Köln, “quoted” text.</p></body></html>".encode("cp1252")
    )
    assert "Grüße aus Köln" in joined(path)


def test_generic_json_is_flattened(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('{"station": {"name": "Quarrington", "birds": ["finch", "wren"]}}')
    text = joined(path)
    assert "station.name: Quarrington" in text and "wren" in text


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("empty.txt", b"", "empty_file"),
        ("blank.md", b"   \n\n  ", "empty_file"),
        ("program.exe", b"MZ\x90\x00", "unsupported_type"),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "unreadable"),
        ("bad.json", b"{not json", "unreadable"),
    ],
)
def test_bad_files_get_named_errors(tmp_path: Path, name: str, content: bytes, code: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ParseError) as info:
        parse_file(path)
    assert info.value.code == code
    assert name in info.value.message


def test_encrypted_pdf(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    plain = write_document(tmp_path, "pdf")
    writer = PdfWriter()
    for page in PdfReader(str(plain)).pages:
        writer.add_page(page)
    writer.encrypt("secret")
    locked = tmp_path / "locked.pdf"
    with locked.open("wb") as handle:
        writer.write(handle)
    with pytest.raises(ParseError) as info:
        parse_file(locked)
    assert info.value.code == "encrypted" and "locked.pdf" in info.value.message


def test_the_text_layer_fallback_reads_alike_through_pdfium_and_pypdf(tmp_path: Path) -> None:
    """The reader for PDFs unstructured's pdfminer gives up on: pdfium where it opens the
    file, pypdf where only pypdf does; both give the same words on the same pages."""
    from ingest.pdf_parsing import _text_layer_fallback, plan_pages
    from ingest.spacy_offline import use_packaged_spacy_model

    use_packaged_spacy_model()  # what parse_file does first
    path = write_document(tmp_path, "pdf", SENTENCE)
    by_pdfium = _text_layer_fallback(path, plan_pages(path))
    by_pypdf = _text_layer_fallback(path, None)
    assert SENTENCE.split()[0] in " ".join(e.text for e in by_pdfium)
    assert {e.page for e in by_pdfium} == {1, 2}
    words = [(e.page, w) for e in by_pdfium for w in e.text.split()]
    assert words == [(e.page, w) for e in by_pypdf for w in e.text.split()]


def test_parsing_never_phones_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """unstructured's analytics would resolve its vendor's host from a thread per parse;
    a self-hosted Quarry parses without a single name lookup."""
    import socket
    import threading

    looked_up: list[str] = []
    real = socket.getaddrinfo

    def recording(host: str, *args: object, **kwargs: object) -> object:
        looked_up.append(str(host))
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    path = tmp_path / "note.txt"
    path.write_text(SENTENCE, encoding="utf-8")
    for _ in range(3):
        assert parse_file(path)
    for thread in threading.enumerate():  # a delivery thread, had one started
        if thread.name.startswith("unstructured"):
            thread.join(10)
    assert looked_up == []
