"""The fast plain-text reader gives exactly unstructured's `partition_text` elements (text,
type, languages) on real and tricky text, and skips spaCy where the answer is settled."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from ingest.encoding import detect_encoding
from ingest.parsing import parse_file
from ingest.plain_text import read_plain_text, sentence_ends
from ingest.spacy_offline import use_packaged_spacy_model
from ingest.unstructured_elements import partition, to_elements

from ..conftest import SHARED

TRICKY = """\
THE ANNUAL REPORT OF THE BOARD OF DIRECTORS FOR THE FISCAL YEAR ENDED DECEMBER THIRTY FIRST

Results and Discussion

Dr. Smith and Mr. J. R. Tolkien met at 5 p.m. in the U.S. Embassy, e.g. in Washington. \
The meeting ran long. They left together after the final vote was counted at midnight.

Mean values (n = 42) were 3.1 ± 0.2, 4.7 ± 0.9, 12.0 ± 1.1, 8.8 ± 0.4 and 7.7 ± 0.3 mg/dL \
respectively, 2.2 1.1 0.9 14.5 13.3 11.0 9.8 7.6 5.4 3.2 1.0.

• First bulleted item in a list that runs well past twelve words for the check here.

1. A numbered item that is long enough to pass the title limit of twelve words.

jane.doe@example.com

Boston, MA 02116

Le conseil a voté la proposition à l'unanimité. Les membres ont quitté la salle ensemble \
après le dépouillement du scrutin final vers minuit.

A long single sentence without any finite verbs in it at all, just nouns and adjectives \
and more nouns, for the classifier

"What a day." "Indeed it was." She smiled and turned back towards the old stone house.

MEETING TABLE? REVIEW STATE BOARD RIVER OLD AND... RIVER REVIEW SECTION STATE MEETING TABLE?

Figure. Notes Section Annual Index Board Of... Board Table Report Meeting North Review?

THE BOARD MET. IT VOTED ON THE RIVER PLAN AND THE NEW BUDGET FOR THE COMING YEAR.
"""


@pytest.fixture(scope="module", autouse=True)
def _spacy() -> None:
    use_packaged_spacy_model()


def unstructured_reading(path: Path) -> list[object]:
    encoding = detect_encoding(path.read_bytes())
    return to_elements(partition(path, strategy="fast", languages=["auto"], encoding=encoding))


def scifact_files(folder: Path, count: int) -> list[Path]:
    corpus = SHARED / "eval" / "scifact" / "corpus.jsonl"
    if not corpus.is_file():
        return []
    paths = []
    with corpus.open(encoding="utf-8") as lines:
        for line in islice(lines, 0, 5000, 50):  # a spread of the corpus
            doc = json.loads(line)
            path = folder / f"scifact-{doc['_id']}.txt"
            path.write_text(f"{doc['title']}\n\n{doc['text']}", encoding="utf-8")
            paths.append(path)
    return paths[:count]


def test_tricky_text_reads_as_unstructured_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "tricky.txt"
    path.write_text(TRICKY, encoding="utf-8")
    mine = read_plain_text(path, "utf-8")
    assert mine == unstructured_reading(path)
    kinds = {element.type for element in mine}
    assert {"Title", "NarrativeText", "ListItem"} <= kinds, kinds


def test_the_shared_corpus_reads_as_unstructured_reads_it(tmp_path: Path) -> None:
    shared = [p for p in sorted((SHARED / "docs").glob("*.txt")) if p.stat().st_size]
    novel = SHARED / "bulk" / "book-war-and-peace-1225p.txt"
    if novel.is_file():  # a slice: the whole book takes unstructured half a minute
        part = tmp_path / "war-and-peace-part.txt"
        part.write_bytes(novel.read_bytes()[:120_000].rsplit(b"\n\n", 1)[0])
        shared.append(part)
    paths = shared + scifact_files(tmp_path, 100)
    if len(paths) < 3:
        pytest.skip("../shared is absent on this machine")
    differ = []
    for path in paths:
        mine = read_plain_text(path, detect_encoding(path.read_bytes()))
        if mine != unstructured_reading(path):
            differ.append(path.name)
        assert mine, path.name
    assert not differ, f"read unlike unstructured: {differ}"


def test_long_paragraphs_of_several_sentences_skip_spacy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unstructured.partition.text as text_module

    classified: list[str] = []
    original = text_module.element_from_text

    def counting(text: str, *args: object, **kwargs: object) -> object:
        classified.append(text)
        return original(text, *args, **kwargs)

    monkeypatch.setattr(text_module, "element_from_text", counting)
    path = tmp_path / "doc.txt"
    path.write_text(TRICKY, encoding="utf-8")
    elements = read_plain_text(path, "utf-8")
    skipped = [e.text for e in elements if e.text not in classified]
    assert any(text.startswith("Dr. Smith") for text in skipped), skipped
    assert "Results and Discussion" in classified  # a possible title: unstructured decides


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("letter.txt", "Dear John,\nThank you for the letter, it arrived today.\n"),
        ("app.log", "2026-12-03 12:00:00,123 INFO started\n2026-12-03 12:00:01,456 INFO ready\n"),
        ("data.txt", '{"title": "Owls", "body": "Owls hunt at night."}'),
        ("page.log", "<html><body><h1>Owls</h1><p>Owls hunt at night.</p></body></html>"),
    ],
)
def test_text_unstructured_reads_as_another_format_is_read_as_it_reads_it(
    tmp_path: Path, name: str, content: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert parse_file(path) == unstructured_reading(path)


@pytest.mark.parametrize(
    ("text", "ends"),
    [
        ("Dr. Smith went home. He slept.", ["Dr. Smith went home."]),
        ("See Fig. 2 and e.g. Table 12. The rest follows.", ["See Fig. 2 and e.g. Table 12."]),
        ("As in Table 1. The rest follows.", []),
        ("J. R. R. Tolkien wrote it. It sold.", ["J. R. R. Tolkien wrote it."]),
        ("It rose in the U.S. Then it fell.", []),
        ('"Stop!" She ran off.', ['"Stop!"']),
        ("all lower. case after the stop", []),
    ],
)
def test_sentence_ends_are_conservative(text: str, ends: list[str]) -> None:
    assert [text[:end].rstrip() for end in sentence_ends(text)] == ends
