"""MultiCardioNER TSV: a header ``filename  label  start_span  end_span  text``, then one TAB-separated row per span.

Rows are grouped into one document per ``filename`` (in order of first appearance). With ``texts_dir`` the text
comes from ``texts_dir/NAME.txt`` (read exactly as stored, a BOM counted) and each row's ``text`` is checked
against ``text[start:end]`` up to whitespace (a row holds a span crossing a line break on one line); without,
documents have an empty text, ``meta["text_missing"] = True`` and the row strings in ``meta["span_texts"]``. Rows
repeating a (filename, label, start, end) already read are skipped and counted (the official scorer keeps the
first). ``write_tsv`` writes each span's whole extent ``start..end`` (a discontinuous span too), its whitespace
runs squeezed to one space when it holds a TAB or a line break, so that what it writes reads back.
"""

from __future__ import annotations

from pathlib import Path

from cardioner.data.common import atomic_path, check_labels, check_span, read_text, span_strings, split_lines
from cardioner.data.document import CorpusError, Document, ReadReport, Span, check_flat

HEADER = ["filename", "label", "start_span", "end_span", "text"]


def _squeeze(string: str) -> str:
    """``string`` with every whitespace run as one space (how a row holds a string that crosses a line break)."""
    return " ".join(string.split())


def read_tsv(path: str | Path, texts_dir: str | Path | None = None, report: ReadReport | None = None,
             flat: bool = False) -> list[Document]:
    """Read a MultiCardioNER TSV file.

    Args:
        path: the TSV file.
        texts_dir: a folder with ``NAME.txt`` per filename, or None.
        report: counts (a new one if None).
        flat: the task is flat: overlapping spans raise CorpusError naming the file and the row.

    Returns:
        One document per filename.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    lines = split_lines(read_text(path, strip_bom=True))
    header = lines[0].split("\t")
    if header[: len(HEADER)] != HEADER:
        raise CorpusError(f"header {lines[0]!r} is not {chr(9).join(HEADER)!r}", path, 1)
    docs: dict[str, Document] = {}
    span_lines: dict[str, list[int]] = {}  # filename -> the row of each of its spans
    seen: set[tuple[str, str, int, int]] = set()
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            report.note("skipped", "blank lines in TSV", f"{path}:{line_no}")
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise CorpusError(f"inconsistent column count: {len(fields)} columns in {line!r}, header has "
                              f"{len(header)}", path, line_no)
        name, label, start_text, end_text, string = fields[:5]
        try:
            start, end = int(start_text), int(end_text)
        except ValueError:
            raise CorpusError(f"start_span/end_span must be integers, got {start_text!r}/{end_text!r}",
                              path, line_no) from None
        if (name, label, start, end) in seen:
            report.note("skipped", "repeated TSV rows (same filename, label, start, end; first kept)",
                        f"{path}:{line_no}")
            continue
        seen.add((name, label, start, end))
        doc = docs.get(name)
        if doc is None:
            if texts_dir is not None:
                text_path = Path(texts_dir) / f"{name}.txt"
                if not text_path.is_file():
                    raise CorpusError(f"no text {text_path} for filename {name!r} (texts_dir must hold NAME.txt "
                                      "for every filename)", path, line_no)
                doc = Document(name, read_text(text_path, allow_empty=True), [], {})
            else:
                doc = Document(name, "", [], {"text_missing": True, "span_texts": []})
            docs[name] = doc
            span_lines[name] = []
        span = Span(start, end, label)
        check_span(span, None if texts_dir is None else doc.text, name, path, line_no)
        if texts_dir is None:
            doc.meta["span_texts"].append(string)
        elif _squeeze(doc.text[start:end]) != _squeeze(string):
            raise CorpusError(f"annotated string {string!r} != text[{start}:{end}] {doc.text[start:end]!r} "
                              f"of {name}.txt", path, line_no)
        doc.spans.append(span)
        span_lines[name].append(line_no)
        report.spans += 1
    if flat:
        for name, doc in docs.items():
            check_flat(doc, path, span_lines=span_lines[name])
    report.documents += len(docs)
    return list(docs.values())


def write_tsv(docs: list[Document], path: str | Path) -> None:
    """Write documents' spans as a MultiCardioNER TSV (atomically); a discontinuous span is written start..end.

    Args:
        docs: the documents (their ids are the filenames); labels must hold no TAB or line break.
        path: the output file.
    """
    for doc in docs:
        check_labels(doc, r"[\t\r\n]", "a TSV row", path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write("\t".join(HEADER) + "\n")
        for doc in docs:
            for span, string in zip(doc.spans, span_strings(doc, extent=True), strict=True):
                if "\t" in string or "\n" in string or "\r" in string:
                    string = _squeeze(string)
                f.write(f"{doc.id}\t{span.label}\t{span.start}\t{span.end}\t{string}\n")
