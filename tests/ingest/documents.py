"""Writes real documents of every supported format, each carrying a known sentence."""

from __future__ import annotations

import json
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

SENTENCE = "The migratory zebra finch sings at dawn near Lake Quarrington."


def _pdf(path: Path, text: str) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 10, "Field notes\n\n" + text)
    pdf.add_page()
    pdf.multi_cell(0, 10, "Second page about something else entirely: tide tables.")
    pdf.output(str(path))


def _docx(path: Path, text: str) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Field notes", level=1)
    document.add_paragraph(text)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "bird", "count"
    table.cell(1, 0).text, table.cell(1, 1).text = "finch", "12"
    document.save(str(path))


def _pptx(path: Path, text: str) -> None:
    from pptx import Presentation

    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Field notes"
    slide.placeholders[1].text = text
    deck.save(str(path))


def _xlsx(path: Path, text: str) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["note", "count"])
    sheet.append([text, 12])
    book.save(str(path))


def _pandoc(fmt: str) -> Callable[[Path, str], None]:
    def write(path: Path, text: str) -> None:
        import pypandoc

        pypandoc.convert_text(f"# Field notes\n\n{text}\n", fmt, format="md", outputfile=str(path))

    return write


def _eml(path: Path, text: str) -> None:
    message = EmailMessage()
    message["From"] = "warden@example.org"
    message["To"] = "team@example.org"
    message["Subject"] = "Field notes"
    message.set_content(text)
    message.add_attachment(
        b"tide tables attached", maintype="text", subtype="plain", filename="t.txt"
    )
    path.write_bytes(message.as_bytes())


def _text(template: str, encoding: str = "utf-8") -> Callable[[Path, str], None]:
    def write(path: Path, text: str) -> None:
        path.write_bytes(template.format(text=text).encode(encoding))

    return write


WRITERS: dict[str, Callable[[Path, str], None]] = {
    "pdf": _pdf,
    "docx": _docx,
    "pptx": _pptx,
    "xlsx": _xlsx,
    "epub": _pandoc("epub"),
    "odt": _pandoc("odt"),
    "rtf": _pandoc("rtf"),
    "eml": _eml,
    "html": _text(
        "<html><head><title>Notes</title></head>"
        "<body><h1>Field notes</h1><p>{text}</p></body></html>"
    ),
    "md": _text("# Field notes\n\n{text}\n"),
    "rst": _text("Field notes\n===========\n\n{text}\n"),
    "txt": _text("Field notes\n\n{text}\n"),
    "csv": _text('note,count\n"{text}",12\n'),
    "tsv": _text("note\tcount\n{text}\t12\n"),
    "xml": _text("<notes><note>{text}</note></notes>"),
    "json": lambda path, text: path.write_text(
        json.dumps({"notes": [{"text": text, "count": 12}]})
    ),
}


def write_document(folder: Path, ext: str, text: str = SENTENCE, stem: str = "notes") -> Path:
    path = folder / f"{stem}.{ext}"
    WRITERS[ext](path, text)
    return path
