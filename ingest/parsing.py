"""Turn one file into `Element`s with unstructured (fast strategy, offline)."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.encoding import detect_encoding
from ingest.models import Element, ParseError
from ingest.ocr import (
    OcrOptions,
    installed_languages,
    missing_languages,
    read_image_file,
    tesseract_available,
)
from ingest.office_convert import CONVERSIONS, convert, soffice
from ingest.pdf_parsing import parse_pdf
from ingest.plain_text import is_plain_text, large_plain_text, read_plain_text
from ingest.spacy_offline import use_packaged_spacy_model
from ingest.unstructured_elements import partition, to_elements

log = logging.getLogger(__name__)

TEXT_TYPES = {
    ".txt",
    ".text",
    ".log",
    ".md",
    ".markdown",
    ".rst",
    ".html",
    ".htm",
    ".xml",
    ".csv",
    ".tsv",
    ".json",
}
OFFICE_TYPES = {".pdf", ".docx", ".pptx", ".xlsx", ".eml", ".msg", ".epub", ".odt", ".rtf"}
LEGACY_TYPES = set(CONVERSIONS)  # converted with LibreOffice first
IMAGE_TYPES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".heic", ".heif"}
SUPPORTED_TYPES = frozenset(TEXT_TYPES | OFFICE_TYPES | LEGACY_TYPES | IMAGE_TYPES)
_OLE_TYPES = {".doc", ".dot", ".xls", ".xlt", ".ppt", ".pps", ".pot", ".msg"}


def _libreoffice_available() -> bool:
    return soffice() is not None


# What formats need beyond Python packages: tool -> (is it here?, the formats it reads).
_LIBREOFFICE, _TESSERACT = "LibreOffice (soffice)", "Tesseract OCR (tesseract)"
_SYSTEM_TOOLS: dict[str, tuple[Callable[[], bool], set[str]]] = {
    _LIBREOFFICE: (_libreoffice_available, LEGACY_TYPES),
    _TESSERACT: (tesseract_available, IMAGE_TYPES),
}


@dataclass(frozen=True)
class ParseOptions:
    """How files are read: zip-bomb bound, OCR languages, LibreOffice's time limit."""

    max_inflated: int = 512 * 1024 * 1024
    ocr: OcrOptions = field(default_factory=OcrOptions)
    convert_timeout_s: float = 120.0


def tools_report(ocr: OcrOptions) -> dict[str, Any]:
    """What the system tools here let Quarry read, and what they make it refuse."""
    present = {tool: check() for tool, (check, _) in _SYSTEM_TOOLS.items()}
    refused = sorted(e for t, (_, reads) in _SYSTEM_TOOLS.items() if not present[t] for e in reads)
    tesseract = present[_TESSERACT]
    report: dict[str, Any] = {
        "ok": True,  # a missing tool refuses some formats; it never stops the service
        "tesseract": tesseract,
        "libreoffice": present[_LIBREOFFICE],
        "ocr_languages": [lang for lang in ocr.languages if lang in installed_languages()],
    }
    missing = missing_languages(ocr) if tesseract else []
    if missing or refused:
        report["reason"] = "; ".join(
            ([f"refused here: {' '.join(refused)}"] if refused else [])
            + ([f"OCR packs not installed: {' '.join(missing)}"] if missing else [])
        )
    return report


def supported_list() -> str:
    return ", ".join(sorted(SUPPORTED_TYPES))


def check_supported(name: str, ext: str | None = None) -> str:
    """The file's extension (from `name` unless given) if Quarry can parse it here, else a
    ParseError naming the file and saying why not."""
    ext = (Path(name).suffix if ext is None else ext).lower()
    if ext not in SUPPORTED_TYPES:
        raise ParseError(
            "unsupported_type",
            f"{name}: unsupported file type {ext or '(no extension)'!r}; "
            f"supported: {supported_list()}",
            status=415,
        )
    needed = next((t for t, (_, reads) in _SYSTEM_TOOLS.items() if ext in reads), None)
    if needed is not None and not _SYSTEM_TOOLS[needed][0]():
        raise ParseError(
            "unsupported_here",
            f"{name}: {ext} files are unsupported here: needs {needed}, which is not installed",
            status=415,
        )
    return ext


ZIP_TYPES = {".docx", ".pptx", ".xlsx", ".odt", ".epub"}
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _zip_guard(path: Path, name: str, max_inflated: int) -> None:
    """Refuse a decompression bomb before anything inflates it; spot encrypted Office files.

    A password-protected .docx/.xlsx/.pptx is no zip at all but an OLE container holding
    an `EncryptedPackage`.
    """
    import zipfile

    with path.open("rb") as handle:
        head = handle.read(8)
    if head == _OLE_MAGIC:
        _ole_guard(path, name)
        raise ParseError("unreadable", f"{name}: an OLE (legacy Office) file, not a {path.suffix}")
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ParseError("unreadable", f"{name}: not a readable {path.suffix} ({exc})") from exc
    if inflated > max_inflated:
        raise ParseError(
            "too_large",
            f"{name}: its parts inflate to {inflated / 1e6:,.0f} MB, over the "
            f"{max_inflated / 1e6:,.0f} MB allowed (a decompression bomb?)",
        )


def _ole_guard(path: Path, name: str) -> None:
    """An OLE file (.doc/.xls/.ppt, or encrypted OOXML) that is password-protected."""
    import msoffcrypto

    try:
        with path.open("rb") as handle:
            encrypted = msoffcrypto.OfficeFile(handle).is_encrypted()
    except Exception:  # not an Office container msoffcrypto knows: let the parser decide
        return
    if encrypted:
        raise ParseError("encrypted", f"{name}: the document is password-protected")


def _mail_guard(path: Path, name: str) -> None:
    """S/MIME- or PGP-encrypted mail has no readable body: say so instead of `no_text`."""
    from email.parser import BytesHeaderParser

    with path.open("rb") as handle:
        headers = BytesHeaderParser().parse(handle)
    content_type = (headers.get_content_type() or "").lower()
    smime = content_type in {"application/pkcs7-mime", "application/x-pkcs7-mime"}
    if smime and "signed-data" not in str(headers.get("content-type", "")).lower():
        raise ParseError("encrypted", f"{name}: the mail is S/MIME-encrypted")
    if content_type == "multipart/encrypted":
        raise ParseError("encrypted", f"{name}: the mail is encrypted (PGP/MIME)")


PLAIN_TYPES = {".txt", ".text", ".log"}
LARGE_TEXT_BYTES = 4 * 1024 * 1024


def _flatten_json(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [
            line for key, item in value.items() for line in _flatten_json(item, f"{prefix}{key}.")
        ]
    if isinstance(value, list):
        return [
            line for i, item in enumerate(value) for line in _flatten_json(item, f"{prefix}{i}.")
        ]
    return [f"{prefix.rstrip('.')}: {value}" if prefix else str(value)]


def _parse_json(path: Path, name: str, encoding: str) -> list[Element]:
    """unstructured's own element JSON is read as elements; any other JSON as key: value text."""
    from unstructured.partition.text import partition_text

    try:
        data = json.loads(path.read_bytes().decode(encoding))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError("unreadable", f"{name}: invalid JSON ({exc})") from exc
    is_elements = (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(item, dict) and "type" in item and "text" in item for item in data)
    )
    if is_elements:
        return to_elements(partition(path, encoding=encoding))
    return to_elements(partition_text(text="\n".join(_flatten_json(data))))


def parse_file(
    path: Path, name: str | None = None, options: ParseOptions | None = None
) -> list[Element]:
    """Parse `path` into elements. `name` is how the file is called in errors.

    Raises:
        ParseError: unsupported or unavailable type, empty, encrypted, unreadable, or no text.
    """
    options = options or ParseOptions()
    name = name or path.name
    ext = check_supported(name, path.suffix)
    data_size = path.stat().st_size
    if data_size == 0:
        raise ParseError("empty_file", f"{name}: the file is empty")
    use_packaged_spacy_model()
    if ext in _OLE_TYPES:
        _ole_guard(path, name)
    if ext in LEGACY_TYPES:
        with tempfile.TemporaryDirectory(prefix="quarry-convert-") as workdir:
            converted = convert(path, name, Path(workdir), options.convert_timeout_s)
            return parse_file(converted, name, options)
    if ext in IMAGE_TYPES:
        return _require_text(read_image_file(path, name, options.ocr), name)
    kwargs: dict[str, Any] = {"strategy": "fast", "languages": ["auto"]}
    if ext in TEXT_TYPES:
        data = path.read_bytes()
        if not data.strip():
            raise ParseError("empty_file", f"{name}: the file holds only whitespace")
        encoding = kwargs["encoding"] = detect_encoding(data)
        if ext == ".json":
            return _require_text(_parse_json(path, name, encoding), name)
        if ext in PLAIN_TYPES and data_size > LARGE_TEXT_BYTES:
            return _require_text(large_plain_text(path, encoding), name)
        if ext in PLAIN_TYPES and is_plain_text(path, encoding):  # else unstructured's reader
            reading = _first_reading(name, [lambda: read_plain_text(path, encoding)])
            return _require_text(reading, name)
    if ext == ".pdf":
        kwargs.pop("languages")  # per-element guesses on PDF fragments are mostly noise
        return parse_pdf(path, name, lambda: _partitioned(path, name, [kwargs]), options.ocr)
    if ext in ZIP_TYPES:
        _zip_guard(path, name, options.max_inflated)
    if ext == ".eml":
        _mail_guard(path, name)
    attempts = [kwargs]
    if ext in {".eml", ".msg"}:
        # an attachment unstructured cannot read (an image, say) must not lose the mail itself
        attempts.append({**kwargs, "process_attachments": False})
    return _require_text(_partitioned(path, name, attempts), name)


def _partitioned(path: Path, name: str, attempts: list[dict[str, Any]]) -> list[Element]:
    """unstructured's elements from the first of `attempts` (keyword sets) that works."""
    readings = [lambda kw=kwargs: to_elements(partition(path, **kw)) for kwargs in attempts]
    return _first_reading(name, readings)


def _first_reading(name: str, readings: Sequence[Callable[[], list[Element]]]) -> list[Element]:
    """The elements of the first of `readings` that works; a ParseError naming the file
    when none does."""
    error: Exception | None = None
    for reading in readings:
        try:
            return reading()
        except ParseError:
            raise
        except MemoryError as exc:
            raise ParseError(
                "too_large", f"{name}: parsing it needs more memory than allowed"
            ) from exc
        except Exception as exc:
            error = exc
    # A parser's exception does not prove the bytes bad: tried again before it is final.
    raise ParseError(
        "unreadable", f"{name}: could not be parsed ({_describe(error)})", suspect=True
    )


def _describe(error: Exception | None) -> str:
    if error is None:
        return "unknown error"
    first = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _require_text(elements: list[Element], name: str) -> list[Element]:
    if not elements:
        raise ParseError("no_text", f"{name}: no text could be extracted")
    return elements
