"""brat standoff folders: ``NAME.txt`` + ``NAME.ann`` pairs, searched recursively.

``T`` lines become spans (discontinuous fragments ``0 5;8 12`` kept); ``A/R/E/N/M/#/*`` lines are kept aside in
``doc.meta["brat_other"]`` as ``[position, line]`` (position = how many ``T`` lines came before), and counted, so
that an unchanged document is written back byte for byte. A kept-aside line is written back only while every
annotation it refers to is (``document.prune_brat_lines``); the others are dropped and counted.

A ``.txt`` that starts with a BOM keeps it as character 0 when the ``.ann`` offsets count it; when they match the
text only without it, the BOM is dropped (``meta["bom_dropped"]``) and counted. Hidden files and folders
(``.ipynb_checkpoints``, a leftover ``.NAME.tmp`` of an interrupted write) are not read.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from cardioner.data.common import (
    BOM,
    atomic_path,
    check_labels,
    check_unique_ids,
    is_hidden,
    make_span,
    pieces_text,
    progress,
    read_text,
    relative_id,
    span_strings,
    split_lines,
)
from cardioner.data.document import (
    BRAT_LINES_DROPPED,
    CorpusError,
    Document,
    ReadReport,
    Span,
    check_flat,
    prune_brat_lines,
)

#: a T line: id, label, fragments ``s e;s e``, annotated string
_T_LINE = re.compile(r"^(?P<id>\S*T\d+)\t(?P<label>\S+) (?P<offsets>[^\t]+)\t(?P<text>.*)$")
_FRAGMENT = re.compile(r"^(-?\d+) (-?\d+)$")
_OTHER_KINDS = {"A": "attribute", "M": "attribute", "R": "relation", "E": "event", "N": "normalisation",
                "#": "note", "*": "equivalence"}
BOM_DROPPED = "BOMs dropped from .txt files whose .ann offsets do not count them"


def _parse_offsets(offsets: str, path: Path, line_no: int) -> tuple[tuple[int, int], ...]:
    """Parse ``"0 5;8 12"`` into ((0, 5), (8, 12)), raising CorpusError on anything else."""
    fragments = []
    for piece in offsets.split(";"):
        match = _FRAGMENT.match(piece.strip())
        if match is None:
            raise CorpusError(f"unparseable T line: offsets {offsets!r} are not 'START END[;START END...]'",
                              path, line_no)
        fragments.append((int(match.group(1)), int(match.group(2))))
    return tuple(fragments)


def parse_ann(ann_text: str, text: str, doc_id: str, ann_path: Path, report: ReadReport,
              flat: bool = False) -> tuple[list[Span], dict]:
    """Parse the contents of one ``.ann`` file against its text.

    Args:
        ann_text: the ``.ann`` contents.
        text: the document text (offsets index into it).
        doc_id: the document id (for messages).
        ann_path: the ``.ann`` path (for messages).
        report: where kept-aside and repaired lines are counted.
        flat: overlapping spans raise CorpusError naming their ``T`` lines.

    Returns:
        (spans in file order, meta with ``brat_ids`` and ``brat_other``).
    """
    spans: list[Span] = []
    ids: list[str] = []
    span_lines: list[int] = []
    other: list[list] = []
    for line_no, line in enumerate(split_lines(ann_text), start=1):
        if not line.strip():
            report.note("skipped", "blank lines in .ann files", f"{ann_path}:{line_no}")
            continue
        kind = line[0]
        if kind in _OTHER_KINDS:
            report.note("kept_aside", f"brat {kind} lines ({_OTHER_KINDS[kind]})")
            other.append([len(spans), line])
            continue
        match = _T_LINE.match(line)
        if match is None:
            raise CorpusError(f"unparseable line {line!r} (expected 'T<n>\\tLABEL START END\\tTEXT' or an "
                              "A/R/E/N/M/#/* line)", ann_path, line_no)
        ann_id = match.group("id")
        if not ann_id.startswith("T") or not ann_id[1:].isdigit():
            fixed = ann_id[ann_id.rindex("T"):]
            report.note("repaired", "malformed T ids read as T<n>", f"{ann_path}:{line_no} {ann_id!r} -> {fixed!r}")
            ann_id = fixed
        fragments = _parse_offsets(match.group("offsets"), ann_path, line_no)
        span = make_span(match.group("label"), fragments, text, doc_id, ann_path, line_no, report)
        annotated, covered = match.group("text"), pieces_text(text, fragments)  # fragments as the line lists them
        if covered != annotated and one_line(covered) != annotated:
            raise CorpusError(f"annotated string {annotated!r} != text[{match.group('offsets')}] {covered!r}",
                              ann_path, line_no)
        spans.append(span)
        ids.append(ann_id)
        span_lines.append(line_no)
    if flat:
        check_flat(Document(doc_id, text, spans), ann_path, span_lines=span_lines)
    meta: dict = {"brat_ids": ids}
    if other:
        meta["brat_other"] = other
    return spans, meta


def _parse_with_bom(ann_path: Path, text: str, doc_id: str, report: ReadReport,
                    flat: bool) -> tuple[str, list[Span], dict]:
    """Parse ``ann_path`` against ``text``; a leading BOM is dropped when only the text without it fits the offsets.

    Returns:
        (the text, possibly without its BOM; the spans; the meta).
    """
    ann_text = read_text(ann_path, allow_empty=True, strip_bom=True)
    counts = ReadReport()  # merged only once a parse succeeds, so that a failed first try counts nothing
    try:
        spans, meta = parse_ann(ann_text, text, doc_id, ann_path, counts, flat)
    except CorpusError as err:
        if not text.startswith(BOM):
            raise
        counts = ReadReport()
        try:
            spans, meta = parse_ann(ann_text, text[1:], doc_id, ann_path, counts)
        except CorpusError:
            raise err from None
        text = text[1:]
        if flat:  # the offsets fit without the BOM: now overlapping spans are the error to report
            parse_ann(ann_text, text, doc_id, ann_path, ReadReport(), flat)
        meta["bom_dropped"] = True
        counts.note("repaired", BOM_DROPPED, str(ann_path))
    report.merge(counts)
    return text, spans, meta


def read_brat(folder: str | Path, report: ReadReport | None = None, flat: bool = False) -> list[Document]:
    """Read every ``NAME.txt`` (+ ``NAME.ann``) under ``folder``, recursively, skipping hidden files and folders.

    Args:
        folder: the brat folder.
        report: counts of kept-aside, repaired and skipped items (a new one if None).
        flat: the task is flat: overlapping spans raise CorpusError naming the ``.ann`` file and lines.

    Returns:
        Documents sorted by id; ids are paths relative to ``folder`` without ``.txt``.
    """
    folder = Path(folder)
    report = report if report is not None else ReadReport()
    if not folder.is_dir():
        raise CorpusError("not a folder", folder)
    txts = {relative_id(p, folder, ".txt"): p for p in folder.rglob("*.txt") if p.is_file() and not is_hidden(p, folder)}
    anns = {relative_id(p, folder, ".ann"): p for p in folder.rglob("*.ann") if p.is_file() and not is_hidden(p, folder)}
    orphans = sorted(set(anns) - set(txts))
    if orphans:
        raise CorpusError(f".ann file without its .txt: {anns[orphans[0]].name} (no {orphans[0]}.txt; "
                          f"{len(orphans)} such files)", anns[orphans[0]])
    if not txts:
        raise CorpusError("no brat .txt/.ann files found", folder)
    docs = []
    for doc_id in progress(sorted(txts), desc=f"reading {folder.name}"):
        text = read_text(txts[doc_id], allow_empty=True)
        if doc_id in anns:
            text, spans, meta = _parse_with_bom(anns[doc_id], text, doc_id, report, flat)
        else:
            report.note("skipped", ".txt files without .ann (read with no spans)", str(txts[doc_id]))
            spans, meta = [], {}
        docs.append(Document(doc_id, text, spans, meta))
        report.documents += 1
        report.spans += len(spans)
    return docs


def one_line(string: str) -> str:
    """An annotated string as an .ann line holds it: line breaks (a span may cross one) become spaces."""
    return string.replace("\r", " ").replace("\n", " ")


def format_ann(doc: Document, report: ReadReport | None = None) -> str:
    """The ``.ann`` contents for ``doc``: T lines (kept ids when they still match) interleaved with kept lines.

    Args:
        doc: the document.
        report: where kept-aside lines that refer to an annotation not written are counted (they are dropped:
            with renumbered ids, every line that refers to an entity, since the old ids no longer name it).

    Returns:
        The text of the ``.ann`` file.
    """
    ids = doc.meta.get("brat_ids")
    keep_ids = isinstance(ids, list) and len(ids) == len(doc.spans)
    if not keep_ids:
        ids = [f"T{i}" for i in range(1, len(doc.spans) + 1)]
    other, dropped = prune_brat_lines(doc.meta.get("brat_other", []), set(ids) if keep_ids else set())
    if dropped and report is not None:
        report.note("skipped", BRAT_LINES_DROPPED, f"{doc.id}: {dropped[0]}", n=len(dropped))
    lines: list[str] = []
    pending = sorted(other, key=lambda item: item[0])
    k = 0
    for i, (ann_id, span, string) in enumerate(zip(ids, doc.spans, span_strings(doc), strict=True)):
        while k < len(pending) and pending[k][0] <= i:
            lines.append(pending[k][1])
            k += 1
        offsets = ";".join(f"{s} {e}" for s, e in span.pieces())
        lines.append(f"{ann_id}\t{span.label} {offsets}\t{one_line(string)}")
    lines.extend(item[1] for item in pending[k:])
    return "".join(line + "\n" for line in lines)


def write_brat(docs: list[Document], folder: str | Path, overwrite: bool = True,
               report: ReadReport | None = None) -> None:
    """Write ``NAME.txt`` (exact text) and ``NAME.ann`` per document into ``folder``.

    Everything is written to a staging folder first, so a failure leaves ``folder`` as it was. A new folder
    then appears whole; into an existing one (the input folder itself, to put ``.ann`` files beside the
    ``.txt`` files) each file is moved atomically, and files of other documents are left alone.

    Args:
        docs: the documents; ids may contain ``/`` (subfolders are created) and must be unique (one would
            overwrite the other); labels must hold no whitespace (an ``.ann`` line could not be read back).
        folder: the output folder.
        overwrite: write into an existing folder, replacing these documents' files there.
        report: where kept-aside lines dropped with their entities are counted.
    """
    check_unique_ids(docs, folder, "the documents to write")
    for doc in docs:
        check_labels(doc, r"\s", "a brat .ann line", folder)
    folder = Path(folder)
    if not folder.is_dir():
        with atomic_path(folder, is_dir=True, overwrite=overwrite) as tmp:
            _write_documents(docs, tmp, folder, report)
        return
    if not overwrite:
        raise CorpusError("output already exists (refusing to overwrite)", folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        _write_documents(docs, staging, folder, report)
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = folder / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_documents(docs: list[Document], root: Path, folder: Path, report: ReadReport | None) -> None:
    """``NAME.txt`` and ``NAME.ann`` of every document under ``root`` (``folder`` names the output in errors)."""
    for doc in progress(docs, desc=f"writing {folder.name}"):
        base = root / doc.id
        if base.resolve() == root.resolve() or root.resolve() not in base.resolve().parents:
            raise CorpusError(f"document id {doc.id!r} is not a relative file name", folder)
        base.parent.mkdir(parents=True, exist_ok=True)
        with open(base.with_name(base.name + ".txt"), "w", encoding="utf-8", newline="") as f:
            f.write(doc.text)
        with open(base.with_name(base.name + ".ann"), "w", encoding="utf-8", newline="") as f:
            f.write(format_ann(doc, report))
