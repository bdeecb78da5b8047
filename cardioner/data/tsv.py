"""MultiCardioNER TSV: a header ``filename  label  start_span
end_span  text``, then one TAB-separated row per span.

Rows are grouped into one document per ``filename`` (in order of first appearance). With ``texts_dir`` the
text comes from ``texts_dir/NAME.txt`` (read exactly as stored, a BOM counted) and each row's ``text`` is
checked against ``text[start:end]`` up to whitespace (a row holds a span crossing a line break on one line);
without, documents have an empty text, ``meta["text_missing"] = True`` and the row strings in
``meta["span_texts"]``. Rows repeating a (filename, label, start, end) already read are skipped and counted
(the official scorer keeps the first). ``write_tsv`` writes each span's whole extent ``start..end`` (a
discontinuous span too), its whitespace runs squeezed to one space when it holds a TAB or a line break, so
that what it writes reads back.

Strict where a lenient reading would change data: offsets are ASCII digits (``int()`` would take ``1_0``,
``+3`` or Arabic-Indic digits), filenames and labels are non-empty, a span covers at least one character, and
a filename names a file inside ``texts_dir`` (no ``..``, no link). A row whose string is not what its offsets
cover follows ``data.span_errors``. Ids written must hold no TAB or line break.

Predicted spans carry their confidence in an extra ``score`` column after ``text`` (the official scorer
reads columns by name and ignores it); the reader takes it back into ``Span.score`` (a number in [0, 1], or
empty).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from cardioner.data.common import (
    atomic_path,
    check_labels,
    check_span_errors,
    format_score,
    head_lines,
    read_score,
    read_span,
    read_text,
    span_strings,
    split_lines,
)
from cardioner.data.document import CorpusError, Document, ReadReport, check_flat
from cardioner.data.paths import check_writable_ids, id_problem, inside
from cardioner.values import InvalidValue, as_int

HEADER = ["filename", "label", "start_span", "end_span", "text"]
#: the extra column of predicted spans: each span's confidence in [0, 1] (empty when unknown); the reader (and
#: the official scorer, which reads columns by name) take it or leave it
SCORE_COLUMN = "score"
_OFFSET = re.compile(r"[0-9]+")


def looks_like_tsv(lines: list[str]) -> bool:
    """Whether the first non-blank ``lines`` of a file start with the MultiCardioNER header."""
    return bool(lines) and lines[0].split("\t")[: len(HEADER)] == HEADER


def _offset(text: str) -> int:
    """A TSV offset: ASCII digits only, bounded (InvalidValue otherwise)."""
    if not _OFFSET.fullmatch(text):
        raise InvalidValue(f"{text!r:.60} is not written with ASCII digits only")
    return as_int(text)


def _squeeze(string: str) -> str:
    """``string`` with every whitespace run as one space (how
    a row holds a string that crosses a line break)."""
    return " ".join(string.split())


def read_tsv(path: str | Path, texts_dir: str | Path | None = None, report: ReadReport | None = None,
             flat: bool = False, span_errors: str = "error") -> list[Document]:
    """Read a MultiCardioNER TSV file.

    Args:
        path: the TSV file.
        texts_dir: a folder with ``NAME.txt`` per filename, or None.
        report: counts (a new one if None).
        flat: the task is flat: overlapping spans raise CorpusError naming the file and the row.
        span_errors: with ``texts_dir``, a row whose string is not what its offsets cover: "error", "skip" or
            "realign" (``common.fit_span``).

    Returns:
        One document per filename.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    check_span_errors(span_errors)
    lines = split_lines(read_text(path, strip_bom=True))
    header = lines[0].split("\t")
    if header[: len(HEADER)] != HEADER:
        raise CorpusError(f"header {lines[0]!r:.120} is not {chr(9).join(HEADER)!r}", path, 1)
    score_column = header.index(SCORE_COLUMN) if SCORE_COLUMN in header[len(HEADER):] else None
    docs: dict[str, Document] = {}
    span_lines: dict[str, list[int]] = {}  # filename -> the row of each of its spans
    seen: set[tuple[str, str, int, int]] = set()
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            report.note("skipped", "blank lines in TSV", f"{path}:{line_no}")
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise CorpusError(
                f"inconsistent column count: {len(fields)} columns in {line!r:.120}, header has "
                f"{len(header)}",
                path,
                line_no,
            )
        name, label, start_text, end_text, string = fields[:5]
        if not label or "\r" in label:  # what a row cannot hold is refused on reading, not first on writing
            raise CorpusError(
                f"label {label!r:.40} is empty or holds a line break in {line!r:.120}", path, line_no
            )
        problem = id_problem(name, "tsv") if name else "is empty"
        if problem is not None:
            raise CorpusError(f"filename {name!r:.40} {problem}, in {line!r:.120}", path, line_no)
        try:
            start, end = _offset(start_text), _offset(end_text)
        except InvalidValue as error:
            raise CorpusError(f"start_span/end_span must be integers: {error}", path, line_no) from None
        if (name, label, start, end) in seen:
            report.note("skipped", "repeated TSV rows (same filename, label, start, end; first kept)",
                        f"{path}:{line_no}")
            continue
        seen.add((name, label, start, end))
        doc = docs.get(name)
        if doc is None:
            doc = _new_document(name, texts_dir, path, line_no)
            docs[name] = doc
            span_lines[name] = []
        text = None if texts_dir is None else doc.text

        def mismatch(pieces: tuple[tuple[int, int], ...], string: str = string, text: str = doc.text,
                     name: str = name) -> str:
            (s, e), = pieces
            return f"annotated string {string!r} != text[{s}:{e}] {text[s:e]!r} of {name}.txt"

        span = read_span(label, ((start, end),), text, name, path, line_no, report, span_errors,
                         lambda pieces, string=string, text=doc.text: _squeeze(pieces_slice(text, pieces))
                         == _squeeze(string), mismatch)
        if span is None:
            continue
        if score_column is not None:
            score = read_score(fields[score_column], path, line_no, text=True)
            span = span if score is None else replace(span, score=score)
        if (span.start, span.end) != (start, end):  # moved by realign: onto a row already read?
            if (name, label, span.start, span.end) in seen:
                report.note("skipped", "repeated TSV rows (same filename, label, start, end; first kept)",
                            f"{path}:{line_no}")
                continue
            seen.add((name, label, span.start, span.end))
        if texts_dir is None:
            doc.meta["span_texts"].append(string)
        doc.spans.append(span)
        span_lines[name].append(line_no)
        report.spans += 1
    if flat:
        for name, doc in docs.items():
            check_flat(doc, path, span_lines=span_lines[name])
    report.documents += len(docs)
    return list(docs.values())


def pieces_slice(text: str, pieces: tuple[tuple[int, int], ...]) -> str:
    """``text[start:end]`` of a one-piece span (a TSV row holds one extent)."""
    (start, end), = pieces
    return text[start:end]


def _new_document(name: str, texts_dir: str | Path | None, path: Path, line_no: int) -> Document:
    """The document of a filename: its text from
    ``texts_dir/NAME.txt`` (a checked path), or marked missing."""
    if texts_dir is None:
        return Document(name, "", [], {"text_missing": True, "span_texts": []})
    problem = id_problem(name, "brat")
    if problem is not None:
        raise CorpusError(f"filename {name!r} {problem}, so it names no file in texts_dir", path, line_no)
    text_path = inside(texts_dir, f"{name}.txt", "text file")
    if not text_path.is_file():
        raise CorpusError(f"no text {text_path} for filename {name!r} (texts_dir must hold NAME.txt "
                          "for every filename)", path, line_no)
    return Document(name, read_text(text_path, allow_empty=True), [], {})


def header_line(scores: bool) -> str:
    """The TSV's first line, with the ``score`` column when spans carry confidences."""
    return "\t".join(HEADER + ([SCORE_COLUMN] if scores else [])) + "\n"


def format_rows(doc: Document, scores: bool) -> str:
    """The rows of one document's spans (a discontinuous span as start..end; a string holding a TAB or a line
    break with its whitespace squeezed), with a score cell each when ``scores`` (empty for a span without)."""
    rows = []
    for span, string in zip(doc.spans, span_strings(doc, extent=True), strict=True):
        if "\t" in string or "\n" in string or "\r" in string:
            string = _squeeze(string)
        cells = [doc.id, span.label, str(span.start), str(span.end), string]
        if scores:
            cells.append("" if span.score is None else format_score(span.score))
        rows.append("\t".join(cells) + "\n")
    return "".join(rows)


def write_tsv(docs: list[Document], path: str | Path) -> None:
    """Write documents' spans as a MultiCardioNER TSV (atomically); a discontinuous span is written
    start..end.
    When any span carries a confidence, a ``score`` column follows the text.

    Args:
        docs: the documents (their ids are the filenames); labels must hold no TAB or line break.
        path: the output file.
    """
    check_writable_ids([doc.id for doc in docs], "tsv", path)
    for doc in docs:
        check_labels(doc, r"[\t\r\n]", "a TSV row", path)
    scores = any(span.score is not None for doc in docs for span in doc.spans)
    with atomic_path(path, looks_ours=lambda existing: looks_like_tsv(head_lines(existing)),
                     what="a MultiCardioNER TSV") as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(header_line(scores))
        for doc in docs:
            f.write(format_rows(doc, scores))
