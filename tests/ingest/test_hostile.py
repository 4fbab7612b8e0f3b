"""Hostile files end in a clear per-file error, in killable, memory-bounded parse workers."""

from __future__ import annotations

import email.message
import time
import zipfile
from pathlib import Path

import pytest

from app.resources import Resources
from app.settings import Settings
from ingest.models import ParseError
from ingest.parse_pool import ParseLimits, ParsePool
from ingest.sources import FileSource

from .documents import write_document

_PARAGRAPH = b"<w:p><w:r><w:t>" + b"lorem ipsum dolor sit amet " * 40 + b"</w:t></w:r></w:p>"


def docx_bomb(path: Path, inflated_mb: int) -> Path:
    """A real .docx whose document.xml inflates to `inflated_mb` (a few hundred kB zipped)."""
    base = write_document(path.parent, "docx", "a seed paragraph", stem="seed")
    with zipfile.ZipFile(base) as seed, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for item in seed.infolist():
            if item.filename != "word/document.xml":
                out.writestr(item, seed.read(item))
        head = b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
        with out.open("word/document.xml", "w") as stream:
            stream.write(head)
            block = _PARAGRAPH * 1000
            for _ in range(inflated_mb * 1024 * 1024 // len(block)):
                stream.write(block)
            stream.write(b"</w:body></w:document>")
    return path


def test_a_decompression_bomb_is_refused_before_it_inflates(tmp_path: Path) -> None:
    bomb = docx_bomb(tmp_path / "bomb.docx", 64)
    assert bomb.stat().st_size < 2_000_000
    pool = ParsePool(ParseLimits(workers=1, max_inflated_mb=32))
    started = time.monotonic()
    try:
        with pytest.raises(ParseError) as caught:
            pool.parse(bomb, "bomb.docx")
    finally:
        pool.close()
    assert caught.value.code == "too_large" and "bomb.docx" in caught.value.message
    assert time.monotonic() - started < 30


def test_a_parse_past_its_memory_bound_is_stopped(tmp_path: Path) -> None:
    bomb = docx_bomb(tmp_path / "heavy.docx", 200)
    pool = ParsePool(ParseLimits(workers=1, memory_mb=600, max_inflated_mb=4096, timeout_s=120))
    try:
        with pytest.raises(ParseError) as caught:
            pool.parse(bomb, "heavy.docx")
        assert caught.value.code == "too_large", caught.value.message
        # The pool goes on with a fresh worker.
        fine = write_document(tmp_path, "txt", "After the storm, the harbour was calm.")
        assert "After the storm" in " ".join(e.text for e in pool.parse(fine, "fine.txt"))
    finally:
        pool.close()


def test_a_parse_past_its_time_limit_is_killed(tmp_path: Path) -> None:
    slow = tmp_path / "slow.txt"
    slow.write_text("\n\n".join(f"Paragraph {i} of a very long report." for i in range(40_000)))
    pool = ParsePool(ParseLimits(workers=1, timeout_s=1.0))
    started = time.monotonic()
    try:
        with pytest.raises(ParseError) as caught:
            pool.parse(slow, "slow.txt")
    finally:
        pool.close()
    assert caught.value.code == "timeout" and "slow.txt" in caught.value.message
    assert time.monotonic() - started < 20


def _encrypted_docx(path: Path) -> Path:
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = write_document(path.parent, "docx", "top secret minutes", stem="plain")
    with plain.open("rb") as source, path.open("wb") as target:
        OOXMLFile(source).encrypt("hunter2", target)
    return path


def _smime_mail(path: Path) -> Path:
    message = email.message.EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@x.org", "b@x.org", "Sealed"
    message.set_content(
        b"\x30\x82\x01\x00garbage-cms", maintype="application", subtype="pkcs7-mime"
    )
    message.replace_header(
        "Content-Type", 'application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"'
    )
    path.write_bytes(message.as_bytes())
    return path


def test_encrypted_files_are_called_encrypted_and_the_rest_goes_on(
    resources: Resources, settings: Settings, tmp_path: Path
) -> None:
    files = [
        (_encrypted_docx(tmp_path / "locked.docx"), "locked.docx"),
        (_smime_mail(tmp_path / "sealed.eml"), "sealed.eml"),
        (docx_bomb(tmp_path / "bomb.docx", 600), "bomb.docx"),
        (write_document(tmp_path, "txt", "Kestrels hover over the motorway verge."), "ok.txt"),
    ]
    report = resources.pipeline("test").run([FileSource(p, key) for p, key in files])
    codes = {error.file: error.code for error in report.errors}
    assert codes == {
        "locked.docx": "encrypted",
        "sealed.eml": "encrypted",
        "bomb.docx": "too_large",
    }
    assert report.ingested == 1 and not report.retrying
