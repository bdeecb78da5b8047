"""brat standoff folders: ``NAME.txt`` + ``NAME.ann`` pairs, searched recursively.

``T`` lines become spans (discontinuous fragments ``0 5;8 12`` kept); ``A/R/E/N/M/#/*`` lines are kept aside
in ``doc.meta["brat_other"]`` as ``[position, line]`` (position = how many ``T`` lines came before), and
counted, so that an unchanged document is written back byte for byte. A kept-aside line is written back only
while every annotation it refers to is (``document.prune_brat_lines``); the others are dropped and counted.

A ``.txt`` that starts with a BOM keeps it as character 0 when the ``.ann`` offsets count it; when they match
the text only without it, the BOM is dropped (``meta["bom_dropped"]``) and counted. Hidden files and folders
(``.ipynb_checkpoints``, a staging folder of an interrupted write) are not read, and counted; a symbolic link
in the folder is an error (``paths.corpus_files``). A ``T`` line whose offsets do not fit its annotated string
is an error, left out or moved, as ``data.span_errors`` says (``common.fit_span``).

Writing follows ``paths``: ids are checked file names; a new folder appears whole; into
an existing brat folder each document's files are staged, then moved in one at a time —
its ``.txt`` (only if new: an existing text file holding another text is never replaced)
before its ``.ann``, or the ``.ann`` first when an ``.ann`` without its ``.txt`` is
there — so that a kill never leaves a ``.txt`` beside an ``.ann`` made for another text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from cardioner.data.common import (
    BOM,
    check_labels,
    check_span_errors,
    format_score,
    pieces_text,
    progress,
    read_span,
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
from cardioner.data.paths import (
    check_output,
    check_writable_ids,
    corpus_files,
    inside,
    make_folders,
    staged_output,
    write_into_folder,
)
from cardioner.values import InvalidValue, as_int, counted

#: a T line: id, label, fragments ``s e;s e``, annotated string
_T_LINE = re.compile(r"^(?P<id>\S*T\d+)\t(?P<label>\S+) (?P<offsets>[^\t]+)\t(?P<text>.*)$")
_FRAGMENT = re.compile(r"^(-?[0-9]+) (-?[0-9]+)$")  # ASCII digits only (\d takes Arabic-Indic ones too)
#: a kept-aside line that may be written: a known kind with its id, one line (brat splits at any line break)
_OTHER_LINE = re.compile(r"^(?:[AM]\d+|R\d+|E\d+|N\d+|#\d*|\*)\t[^\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]*$")
OTHER_LINES_INVALID = "kept-aside brat lines that are not one A/M/R/E/N/#/* line (dropped, never written)"
_OTHER_KINDS = {"A": "attribute", "M": "attribute", "R": "relation", "E": "event", "N": "normalisation",
                "#": "note", "*": "equivalence"}
BOM_DROPPED = "BOMs dropped from .txt files whose .ann offsets do not count them"


def _parse_offsets(offsets: str, path: Path, line_no: int) -> tuple[tuple[int, int], ...]:
    """Parse ``"0 5;8 12"`` into ((0, 5), (8, 12)), raising CorpusError on anything else."""
    fragments = []
    for piece in offsets.split(";"):
        match = _FRAGMENT.match(piece.strip())
        if match is None:
            raise CorpusError(
                f"unparseable T line: offsets {offsets!r:.80} are not 'START END[;START END...]' "
                "(ASCII digits)",
                path,
                line_no,
            )
        try:
            fragments.append((as_int(match.group(1)), as_int(match.group(2))))
        except InvalidValue as error:
            raise CorpusError(f"unparseable T line: an offset {error}", path, line_no) from None
    return tuple(fragments)


def valid_other_line(line: object) -> bool:
    """Whether ``line`` may be written into an ``.ann`` file as a kept-aside (A/M/R/E/N/#/*) line."""
    return isinstance(line, str) and _OTHER_LINE.match(line) is not None


def parse_ann(ann_text: str, text: str, doc_id: str, ann_path: Path, report: ReadReport,
              flat: bool = False, span_errors: str = "error") -> tuple[list[Span], dict]:
    """Parse the contents of one ``.ann`` file against its text.

    Args:
        ann_text: the ``.ann`` contents.
        text: the document text (offsets index into it).
        doc_id: the document id (for messages).
        ann_path: the ``.ann`` path (for messages).
        report: where kept-aside, repaired, moved and left-out lines are counted.
        flat: overlapping spans raise CorpusError naming their ``T`` lines.
        span_errors: a ``T`` line whose offsets do not fit its annotated string: "error", "skip" or "realign".

    Returns:
        (spans in file order, meta with ``brat_ids`` and ``brat_other``).
    """
    spans: list[Span] = []
    ids: list[str] = []
    span_lines: list[int] = []
    id_lines: dict[str, int] = {}  # every T id's line, a skipped span's too
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
            raise CorpusError(
                f"unparseable line {line!r:.120} (expected 'T<n>\\tLABEL START END\\tTEXT' or an "
                "A/R/E/N/M/#/* line)",
                ann_path,
                line_no,
            )
        ann_id = match.group("id")
        if not ann_id.startswith("T") or not ann_id[1:].isdigit():
            fixed = ann_id[ann_id.rindex("T"):]
            report.note(
                "repaired", "malformed T ids read as T<n>", f"{ann_path}:{line_no} {ann_id!r} -> {fixed!r}"
            )
            ann_id = fixed
        annotated = match.group("text")

        def matches(pieces: tuple[tuple[int, int], ...], annotated: str = annotated) -> bool:
            covered = pieces_text(text, pieces)  # fragments as the line lists them
            return covered == annotated or one_line(covered) == annotated

        def mismatch(pieces: tuple[tuple[int, int], ...], annotated: str = annotated) -> str:
            offsets = ";".join(f"{s} {e}" for s, e in pieces)
            return f"annotated string {annotated!r} != text[{offsets}] {pieces_text(text, pieces)!r}"

        offsets = _parse_offsets(match.group("offsets"), ann_path, line_no)
        if ann_id in id_lines:  # notes and relations on it would mean either entity
            raise CorpusError(f"entity id {ann_id} is given twice (lines {id_lines[ann_id]} and {line_no})",
                              ann_path, line_no)
        id_lines[ann_id] = line_no
        span = read_span(match.group("label"), offsets, text, doc_id, ann_path, line_no, report, span_errors,
                         matches, mismatch)
        if span is None:
            continue
        spans.append(span)
        ids.append(ann_id)
        span_lines.append(line_no)
    if flat:
        check_flat(Document(doc_id, text, spans), ann_path, span_lines=span_lines)
    meta: dict = {"brat_ids": ids}
    if other:
        meta["brat_other"] = other
    return spans, meta


def _parse_with_bom(ann_path: Path, text: str, doc_id: str, report: ReadReport, flat: bool,
                    span_errors: str = "error") -> tuple[str, list[Span], dict]:
    """Parse ``ann_path`` against ``text``; a leading BOM is
    dropped when only the text without it fits the offsets.

    When neither text fits every span (a BOM and a broken span, read with skip or realign), the one whose
    ``skip`` parse leaves out fewer spans is taken.

    Returns:
        (the text, possibly without its BOM; the spans; the meta).
    """
    ann_text = read_text(ann_path, allow_empty=True, strip_bom=True)

    def attempt(candidate: str, policy: str, check_flat: bool = flat) -> tuple[list[Span], dict, ReadReport]:
        counts = ReadReport()  # merged only once a parse is kept, so that a failed try counts nothing
        spans, meta = parse_ann(ann_text, candidate, doc_id, ann_path, counts, check_flat, policy)
        return spans, meta, counts

    def left_out(candidate: str) -> int:
        try:
            return sum(attempt(candidate, "skip", False)[2].skipped.values())
        except CorpusError:
            return 1 << 30

    try:
        spans, meta, counts = attempt(text, "error")
    except CorpusError as err:
        if span_errors == "error" and not text.startswith(BOM):
            raise
        chosen = text
        if text.startswith(BOM):
            try:
                spans, meta, counts = attempt(text[1:], "error", False)
                chosen = text[1:]
                if flat:  # the offsets fit without the BOM: now overlapping spans are the error to report
                    attempt(chosen, "error")
            except CorpusError as without:
                if span_errors == "error":
                    raise (without if "overlapping spans" in without.problem else err) from None
                if left_out(text[1:]) < left_out(text):
                    chosen = text[1:]
                spans, meta, counts = attempt(chosen, span_errors)
        else:
            spans, meta, counts = attempt(text, span_errors)
        if chosen != text:
            meta["bom_dropped"] = True
            counts.note("repaired", BOM_DROPPED, str(ann_path))
        text = chosen
    report.merge(counts)
    return text, spans, meta


def read_brat(folder: str | Path, report: ReadReport | None = None, flat: bool = False,
              span_errors: str = "error") -> list[Document]:
    """Read every ``NAME.txt`` (+ ``NAME.ann``) under
    ``folder``, recursively, skipping hidden files and folders.

    Args:
        folder: the brat folder.
        report: counts of kept-aside, repaired, moved and skipped items (a new one if None).
        flat: the task is flat: overlapping spans raise CorpusError naming the ``.ann`` file and lines.
        span_errors: a ``T`` line whose offsets do not fit its annotated string:
            "error" (CorpusError naming the option), "skip" (left out, counted)
            or "realign" (moved to its string nearby, each move reported).

    Returns:
        Documents sorted by id; ids are paths relative to ``folder`` without ``.txt``.
    """
    folder = Path(folder)
    report = report if report is not None else ReadReport()
    check_span_errors(span_errors)
    if not folder.is_dir():
        raise CorpusError("not a folder", folder)
    files = corpus_files(folder, report)
    txts = {relative_id(p, folder, ".txt"): p for p in files if p.suffix == ".txt"}
    anns = {relative_id(p, folder, ".ann"): p for p in files if p.suffix == ".ann"}
    orphans = sorted(set(anns) - set(txts))
    if orphans:
        raise CorpusError(f".ann file without its .txt: {anns[orphans[0]].name} (no {orphans[0]}.txt; "
                          f"{counted(len(orphans), 'such file')})", anns[orphans[0]])
    if not txts:
        raise CorpusError("no brat .txt/.ann files found", folder)
    docs = []
    for doc_id in progress(sorted(txts), desc=f"reading {folder.name}"):
        text = read_text(txts[doc_id], allow_empty=True)
        if doc_id in anns:
            text, spans, meta = _parse_with_bom(anns[doc_id], text, doc_id, report, flat, span_errors)
        else:
            report.note("skipped", ".txt files without .ann (read with no spans)", str(txts[doc_id]))
            spans, meta = [], {}
        docs.append(Document(doc_id, text, spans, meta))
        report.documents += 1
        report.spans += len(spans)
    return docs


def is_brat_folder(folder: Path) -> bool:
    """Whether ``folder`` holds brat files (a ``.txt`` or ``.ann`` outside hidden folders; links not
    followed): a folder documents may be written into."""
    for _, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        if any(name.endswith((".txt", ".ann")) and not name.startswith(".") for name in files):
            return True
    return False


def one_line(string: str) -> str:
    """An annotated string as an .ann line holds it: line breaks (a span may cross one) become spaces."""
    return string.replace("\r", " ").replace("\n", " ")


#: the AnnotatorNotes text of a span's confidence (``format_ann(..., score_notes=True)``), then the score
SCORE_NOTE = "confidence"


def _note_numbers(lines: list[str]) -> int:
    """The highest number of a ``#N`` note among kept-aside ``lines`` (0 when none)."""
    numbers = [int(match.group(1)) for match in map(re.compile(r"#([0-9]+)\t").match, lines) if match]
    return max(numbers, default=0)


def format_ann(doc: Document, report: ReadReport | None = None, score_notes: bool = False) -> str:
    """The ``.ann`` contents for ``doc``: T lines (kept ids when they still match) interleaved with kept
    lines.

    Args:
        doc: the document.
        report: where kept-aside lines that refer to an annotation not written are counted (they are dropped:
            with renumbered ids, every line that refers to an entity, since the old ids no longer name it).
        score_notes: after each span with a confidence, an AnnotatorNotes line ``#N<TAB>AnnotatorNotes
            T<k><TAB>confidence 0.9731`` (brat shows it on the entity; INCEpTION imports it as a note).

    Returns:
        The text of the ``.ann`` file.
    """
    ids = doc.meta.get("brat_ids")
    keep_ids = isinstance(ids, list) and len(ids) == len(doc.spans)
    if not keep_ids:
        ids = [f"T{i}" for i in range(1, len(doc.spans) + 1)]
    other = doc.meta.get("brat_other") or []
    valid = [item for item in other if isinstance(item, (list, tuple)) and len(item) == 2
             and isinstance(item[0], int) and not isinstance(item[0], bool) and valid_other_line(item[1])]
    if len(valid) < len(other) and report is not None:
        report.note("skipped", OTHER_LINES_INVALID,
                    f"{doc.id}: {next(i for i in other if i not in valid)!r:.80}", n=len(other) - len(valid))
    other, dropped = prune_brat_lines(valid, set(ids) if keep_ids else set())
    if dropped and report is not None:
        report.note("skipped", BRAT_LINES_DROPPED, f"{doc.id}: {dropped[0]}", n=len(dropped))
    lines: list[str] = []
    pending = sorted(other, key=lambda item: item[0])
    note = _note_numbers([item[1] for item in pending])
    k = 0
    for i, (ann_id, span, string) in enumerate(zip(ids, doc.spans, span_strings(doc), strict=True)):
        while k < len(pending) and pending[k][0] <= i:
            lines.append(pending[k][1])
            k += 1
        offsets = ";".join(f"{s} {e}" for s, e in span.pieces())
        lines.append(f"{ann_id}\t{span.label} {offsets}\t{one_line(string)}")
        if score_notes and span.score is not None:
            note += 1
            lines.append(f"#{note}\tAnnotatorNotes {ann_id}\t{SCORE_NOTE} {format_score(span.score)}")
    lines.extend(item[1] for item in pending[k:])
    return "".join(line + "\n" for line in lines)


def write_brat(docs: list[Document], folder: str | Path, overwrite: bool = True,
               report: ReadReport | None = None, score_notes: bool = False) -> None:
    """Write ``NAME.txt`` (exact text) and ``NAME.ann`` per document into ``folder`` (see the module
    docstring).

    A new folder appears whole. An existing folder must be empty or a brat folder (anything else is refused
    and left as it is); into it, each document's files are staged and moved in one at a time, files of other
    documents are left alone, and a ``.txt`` that holds another text than its document is never replaced.

    Args:
        docs: the documents; ids are relative file paths (``paths.id_problem``: no ``..``, no hidden part,
            unique up to case) — subfolders are created; labels must hold no whitespace (an ``.ann`` line
            could not be read back).
        folder: the output folder.
        overwrite: write into an existing folder, replacing these documents' ``.ann`` files there.
        report: where kept-aside lines dropped (with their entities, or invalid) are counted.
        score_notes: write each span's confidence as an AnnotatorNotes line (``format_ann``).
    """
    folder = Path(folder)
    check_writable_ids([doc.id for doc in docs], "brat", folder)
    for doc in docs:
        check_labels(doc, r"\s", "a brat .ann line", folder)
    exists = check_output(folder, "folder", is_brat_folder, "a brat folder (.txt and .ann files)")
    if not exists:
        with staged_output(
            folder, "folder", is_brat_folder, "a brat folder (.txt and .ann files)"
        ) as staging:
            for doc in progress(docs, desc=f"writing {folder.name}"):
                for relative, content in document_files(doc, report, score_notes):
                    make_folders(staging, relative)
                    (staging / relative).write_bytes(content)
        return
    if not overwrite:
        raise CorpusError("output already exists (refusing to overwrite)", folder)
    write_into_folder(folder, files_into(folder, progress(docs, desc=f"writing {folder.name}"), report,
                                         score_notes))


def document_files(doc: Document, report: ReadReport | None = None,
                   score_notes: bool = False) -> list[tuple[str, bytes]]:
    """(``ID.txt``, text bytes) and (``ID.ann``, annotation bytes) of one document."""
    ann = format_ann(doc, report, score_notes).encode("utf-8")
    return [(f"{doc.id}.txt", doc.text.encode("utf-8")), (f"{doc.id}.ann", ann)]


def files_into(folder: Path, docs, report: ReadReport | None = None,
               score_notes: bool = False) -> Iterator[tuple[str, bytes]]:
    """The files to move into the existing ``folder``, pair by pair, in the order that never mismatches a
    pair."""
    for doc in docs:
        (txt_name, text), (ann_name, ann) = document_files(doc, report, score_notes)
        txt_path = inside(folder, txt_name, "text file")
        ann_path = inside(folder, ann_name, "annotation file")
        if txt_path.exists():
            if txt_path.read_bytes() != text:
                raise CorpusError(
                    f"exists and holds another text than document {doc.id!r}; an existing text file "
                    "is never replaced (remove it, or write to a new folder)",
                    txt_path,
                )
            yield ann_name, ann
        # an .ann without its .txt: pairing it with the new text for a moment would mismatch
        elif ann_path.exists():
            yield ann_name, ann
            yield txt_name, text
        else:
            yield txt_name, text
            yield ann_name, ann
