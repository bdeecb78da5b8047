"""The HTML view (issue 20, Done-when 3): ``predict --format html`` and ``evaluate --html``.

Fast tests read the pages with Python's HTML parser: every highlighted span's text is the span's text, a
document's text comes back whole, everything from the documents is escaped, overlapping spans stay apart. The
slow test opens both pages in headless Chromium (Debian's package), lets it run the page's script, takes
screenshots and reads the highlighted spans back from the DOM Chromium built.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from noisy_export import noisy_tiny_export
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.data import read_corpus
from cardioner.data.document import Document, Span
from cardioner.view import compare_spans, evaluation_page, prediction_page

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "ncbi_sample"
HOSTILE = 'x <script>alert("1")</script> & <img src=x onerror=alert(2)> "quoted" \'single\' &amp; end'


@dataclass(frozen=True, order=True)
class ScoredSpan(Span):
    """A span with a confidence, as issue 18's ``Span.score`` (PLAN.md's contract) will carry it."""

    score: float | None = field(default=None, compare=False)


class PageReader(HTMLParser):
    """What a page shows: per document its text, and per highlighted span its attributes and its text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[dict] = []
        self.docs: dict[str, str] = {}
        self.spans: dict[str, dict] = {}
        self.scripts = 0
        self.ready = False
        self._doc: str | None = None
        self._in_text = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "body" and attrs.get("data-ready") == "1":
            self.ready = True
        if tag == "section" and "data-doc" in attrs:
            self._doc = attrs["data-doc"]
            self.docs[self._doc] = ""
        if tag == "div" and attrs.get("class") == "text":
            self._in_text += 1
        if "data-span" in attrs:
            record = self.spans.setdefault(attrs["data-span"], {"doc": self._doc, "text": "", **attrs})
            record["class"] = attrs["class"]
        self.stack.append({"tag": tag, **attrs})

    def handle_endtag(self, tag):
        while self.stack:
            top = self.stack.pop()
            if top["tag"] == "div" and top.get("class") == "text":
                self._in_text -= 1
            if top["tag"] == tag:
                break

    def handle_data(self, data):
        if self._in_text and self._doc is not None:
            self.docs[self._doc] += data
            for element in self.stack:
                if "data-span" in element:
                    self.spans[element["data-span"]]["text"] += data


def read_page(page: str) -> PageReader:
    reader = PageReader()
    reader.feed(page)
    reader.close()
    return reader


def shown(reader: PageReader, outcomes: tuple[str, ...] | None = None) -> set[tuple]:
    """(document, start, end, label, text) of the highlighted spans (of the given outcomes)."""
    return {(r["doc"], int(r["data-start"]), int(r["data-end"]), r["data-label"], r["text"])
            for r in reader.spans.values() if outcomes is None or r.get("data-outcome") in outcomes}


def expected(docs: list[Document]) -> set[tuple]:
    return {(d.id, s.start, s.end, s.label, d.text[s.start:s.end]) for d in docs for s in d.spans}


OVERLAPPING = Document("nested <&> doc", "Carcinoma of the left breast and ovarian cancer; " + HOSTILE, [
    ScoredSpan(0, 28, "DISO", score=0.91),       # contains ANAT
    ScoredSpan(17, 28, "ANAT", score=0.55),
    ScoredSpan(22, 47, "PROC", score=0.3),       # crosses DISO's end
    ScoredSpan(33, 47, "DISO", score=0.88),
    ScoredSpan(49, 74, 'LAB"<x>', score=0.5),    # a hostile label over hostile text
])


# ----------------------------------------------------------------------------------------------- fast
def test_prediction_page_shows_every_span_with_its_text_escaped_and_overlaps_apart():
    docs = [OVERLAPPING, Document("plain", "No entities here.\nSecond line.", [])]
    page = prediction_page(docs)
    reader = read_page(page)
    assert reader.scripts == 1 and "<script>alert" not in page and "<img src=x" not in page
    assert reader.docs == {doc.id: doc.text for doc in docs}  # the text, whole (chips are CSS, not text)
    assert shown(reader) == expected(docs)
    records = {(int(r["data-start"]), r["data-label"]): r for r in reader.spans.values()}
    assert records[(0, "DISO")]["data-score"] == "0.910" and records[(17, "ANAT")]["data-score"] == "0.550"
    lanes = {key: next(c for c in r["class"].split() if c.startswith("lane")) for key, r in records.items()}
    assert len({lanes[(0, "DISO")], lanes[(17, "ANAT")], lanes[(22, "PROC")]}) == 3  # overlapping: own lanes
    assert 'http' not in page.replace("http-equiv", "")  # self-contained: nothing fetched


def test_compare_spans_marks_correct_missed_spurious_and_wrong_type():
    gold = [Span(0, 5, "A"), Span(6, 10, "B"), Span(12, 20, "A"), Span(30, 35, "C")]
    predicted = [Span(0, 5, "A"), Span(6, 10, "C"), Span(14, 20, "A"), Span(40, 44, "B")]
    outcomes = {
        (s.start, s.end, s.label): (outcome, note) for s, outcome, note in compare_spans(gold, predicted)
    }
    assert outcomes == {
        (0, 5, "A"): ("correct", ""),
        (6, 10, "C"): ("wrong-type", "gold: B"),
        (14, 20, "A"): ("spurious", "overlaps gold A 12-20"),
        (40, 44, "B"): ("spurious", ""),
        (12, 20, "A"): ("missed", "overlaps predicted A 14-20"),
        (30, 35, "C"): ("missed", ""),
    }


def test_evaluation_page_has_the_per_type_table_and_every_outcome():
    from cardioner.evaluation import score_spans

    text = "alpha beta gamma delta epsilon zeta eta theta " + HOSTILE
    gold = [Document("d<1>", text, [Span(0, 5, "A"), Span(6, 10, "B"), Span(11, 16, "A"), Span(17, 22, "C")])]
    pred = [Document("d<1>", text, [Span(0, 5, "A"), Span(6, 10, "C"), Span(11, 14, "A"), Span(46, 55, "B")])]
    scores = score_spans(gold, pred)
    scores["overlap"] = score_spans(gold, pred, match="overlap")
    reader = read_page(evaluation_page(gold, pred, scores))
    assert reader.docs == {"d<1>": text}
    assert shown(reader, ("correct", "wrong-type", "spurious")) == expected(pred)
    assert shown(reader, ("correct", "missed")) | {
        (d, s, e, "B", t) for d, s, e, _, t in shown(reader, ("wrong-type",))
    } == expected(gold)
    page = evaluation_page(gold, pred, scores)
    assert "<table class=\"scores\">" in page and page.index("<table") < page.index('<section class="doc"')
    for label in ("A", "B", "C", "micro", "macro"):
        assert f"<th>{label}</th>" in page


def test_pages_replace_only_earlier_pages(noisy_export, tmp_path):
    thesis = tmp_path / "thesis.html"
    thesis.write_text("<html>my thesis</html>", encoding="utf-8")
    runs = [
        (
            ["predict", "--model", noisy_export, "--input", SAMPLE / "test", "--output", thesis, "--format",
             "html"],
            "does not hold a page cardioner wrote",
        ),
        (["evaluate", "--model", noisy_export, "--data", SAMPLE / "test", "--html", tmp_path],
         "the output is a folder; a file was expected"),
    ]
    for args, fragment in runs:
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 1 and fragment in result.output, result.output
    assert thesis.read_text(encoding="utf-8") == "<html>my thesis</html>"
    page = tmp_path / "entities.html"
    for _ in range(2):  # new, then an earlier page: replaced
        result = CliRunner().invoke(
            app,
            [
                str(a)
                for a in ["predict", "--model", noisy_export, "--input", SAMPLE / "test", "--output", page,
                          "--format", "html"]
            ],
        )
        assert result.exit_code == 0, result.output
    assert read_page(page.read_text(encoding="utf-8")).docs.keys() == {
        p.stem for p in (SAMPLE / "test").glob("*.txt")
    }


# --------------------------------------------------------------------------------------------- slow: Chromium
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("headless Chromium is not installed (Debian: apt-get install -y chromium)")


def in_chromium(page: Path, tmp_path: Path, screenshot: Path) -> str:
    """The DOM Chromium built for ``page`` after its script ran; a screenshot of it on the way."""
    browser = chromium()
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / ('profile-' + page.stem)}"]
    subprocess.run([browser, *flags, "--window-size=1280,1000", f"--screenshot={screenshot}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    done = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                          timeout=120)
    return done.stdout.decode("utf-8")


def is_picture(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000  # a page, not a blank image


@pytest.fixture(scope="module")
def noisy_export(one_thread, tmp_path_factory) -> Path:
    """A tiny BERT + CRF that predicts many entities (tests/noisy_export.py)."""
    return noisy_tiny_export(tmp_path_factory.mktemp("noisy_export"), seed=1)


@pytest.mark.slow
def test_both_pages_in_headless_chromium_show_the_predicted_spans(noisy_export, tmp_path):
    def cli(*args):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output

    jsonl, page, evaluation = (tmp_path / "p.jsonl", tmp_path / "predictions.html",
                               tmp_path / "evaluation.html")
    cli(
        "predict", "--model", noisy_export, "--input", SAMPLE / "test", "--output", jsonl, "--format", "jsonl"
    )
    cli("predict", "--model", noisy_export, "--input", SAMPLE / "test", "--output", page, "--format", "html")
    cli("evaluate", "--model", noisy_export, "--data", SAMPLE / "test", "--html", evaluation)
    predicted = [Document(r["id"], r["text"], [Span(s["start"], s["end"], s["label"]) for s in r["spans"]])
                 for r in map(json.loads, jsonl.read_text(encoding="utf-8").splitlines())]
    assert sum(len(d.spans) for d in predicted) > 20
    gold, _ = read_corpus(SAMPLE / "test")

    reader = read_page(in_chromium(page, tmp_path, tmp_path / "predictions.png"))
    assert reader.ready  # the page's script ran without an error
    assert shown(reader) == expected(predicted)
    assert reader.docs == {d.id: d.text.replace("\r\n", "\n") for d in predicted}
    assert is_picture(tmp_path / "predictions.png")

    reader = read_page(in_chromium(evaluation, tmp_path, tmp_path / "evaluation.png"))
    assert reader.ready
    assert shown(reader, ("correct", "wrong-type", "spurious")) == expected(predicted)
    assert shown(reader, ("correct", "missed")) <= expected(gold)
    tp = sum(1 for r in reader.spans.values() if r.get("data-outcome") == "correct")
    from cardioner.evaluation import score_spans

    assert tp == score_spans(gold, predicted)["micro"]["tp"]
    assert is_picture(tmp_path / "evaluation.png")

    overlaps = tmp_path / "overlaps.html"  # nested and crossing spans with confidences, hostile text
    overlaps.write_text(prediction_page([OVERLAPPING]), encoding="utf-8")
    dom = in_chromium(overlaps, tmp_path, tmp_path / "overlaps.png")
    reader = read_page(dom)
    assert reader.ready and reader.scripts == 1 and "<img" not in dom
    assert shown(reader) == expected([OVERLAPPING]) and reader.docs == {OVERLAPPING.id: OVERLAPPING.text}
    assert is_picture(tmp_path / "overlaps.png")
