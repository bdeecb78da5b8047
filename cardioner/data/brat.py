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
its ``.txt`` (only if new, or one cardioner wrote) before its ``.ann``, or the ``.ann``
first when an ``.ann`` without its ``.txt`` is there, or the old ``.ann`` deleted first
when both are replaced — so that a kill never leaves a ``.txt`` beside an ``.ann`` made
for another text.

**What cardioner wrote, it may replace; nothing else.** Every brat folder cardioner writes holds a hidden
record, ``.cardioner.jsonl`` (``paths.OUTPUT_RECORD``): a header line, then one JSON line per file written,
``{"file": "a.ann", "sha256": ...}``, appended (and fsync'ed) *before* the file is moved in, so that after a
kill the file holds bytes the record vouches for, old or new. An existing folder is an earlier output only by
its record (``has_record``) — looking like brat is not enough — or, for ``predict``, when it is the input
folder itself (``.ann`` written beside the ``.txt`` files). In it, an existing ``.ann``, or a ``.txt`` that
holds another text, is replaced only when the record shows cardioner wrote exactly its bytes; a gold file, one
an annotator corrected, or one written before the record existed is refused, naming it, before anything is
written (``check_brat_output``, which ``predict`` calls before the model runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
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
    OUTPUT_RECORD,
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


# ------------------------------------------------------------------------------------------------- the record
#: what an existing brat output must be to be written into (``paths.check_output``'s ``what``)
BRAT_OUTPUT = f"a brat folder cardioner wrote (one holding its record, {OUTPUT_RECORD})"
_RECORD_HEADER = {"written_by": "cardioner", "record": "files written into this brat folder, with the "
                  "SHA-256 of their bytes; cardioner replaces a file only when it finds its bytes here"}


def has_record(folder: Path) -> bool:
    """Whether ``folder`` holds cardioner's record (a regular file whose first line is the header): a brat
    folder cardioner wrote, which it may write into again."""
    path = folder / OUTPUT_RECORD
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, encoding="utf-8") as handle:
            return json.loads(handle.readline()) == _RECORD_HEADER
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def brat_output_check(input: str | Path | None = None) -> Callable[[Path], bool]:
    """``looks_ours`` for a brat output: a folder with cardioner's record or, given ``input``, the input
    folder itself (``predict`` writes each ``.ann`` beside its ``.txt``)."""
    def looks_ours(folder: Path) -> bool:
        if has_record(folder):
            return True
        return input is not None and Path(input).is_dir() and os.path.samefile(folder, input)
    return looks_ours


def read_record(folder: Path) -> dict[str, set[str]]:
    """The record of ``folder``: file (relative POSIX path) -> the SHA-256s of the bytes cardioner wrote
    there; empty when there is none. A line cut by a kill (the last one) is not trusted."""
    if not has_record(folder):
        return {}
    written: dict[str, set[str]] = {}
    with open(folder / OUTPUT_RECORD, encoding="utf-8") as handle:
        handle.readline()
        for line in handle:
            try:
                entry = json.loads(line) if line.endswith("\n") else None
            except ValueError:
                entry = None
            if isinstance(entry, dict) and isinstance(entry.get("file"), str) \
                    and isinstance(entry.get("sha256"), str):
                written.setdefault(entry["file"], set()).add(entry["sha256"])
    return written


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def record_lines(files: Iterable[tuple[str, bytes | None]], record: dict[str, set[str]]) -> str:
    """The record lines of ``files`` (relative path, bytes; None: a deletion) not yet in ``record``, which
    learns them."""
    lines = []
    for relative, content in files:
        if content is None:
            continue
        digest = _sha256(content)
        if digest not in record.setdefault(relative, set()):
            record[relative].add(digest)
            lines.append(json.dumps({"file": relative, "sha256": digest}, ensure_ascii=False) + "\n")
    return "".join(lines)


def append_record(folder: Path, lines: str) -> None:
    """Append ``lines`` to the record of ``folder`` durably (fsync), creating it first when absent (its header
    written aside and renamed in: a record is whole or absent)."""
    path = inside(folder, OUTPUT_RECORD, "record")
    if os.path.lexists(path) and not has_record(folder):
        raise CorpusError("is not a record cardioner wrote (its first line is not the record's header), so "
                          "it is left as it is: write to another output folder", path)
    if not os.path.lexists(path):
        part = inside(folder, OUTPUT_RECORD + ".part", "record")
        with open(part, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(_RECORD_HEADER) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, path)
    if not lines:
        return
    with open(path, "r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        handle.seek(end - 1)
        cut = handle.read(1) != b"\n"  # a line a kill cut short: ended, so that it stays one bad line
        handle.write((b"\n" if cut else b"") + lines.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


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

    A new folder appears whole, with its record. An existing folder must be empty or one cardioner wrote (its
    record; anything else is refused and left as it is); into it, each document's files are staged and moved
    in one at a time, files of other documents are left alone, and a file is replaced only when the record
    shows cardioner wrote its bytes (``check_brat_output``, for every document before anything is written).

    Args:
        docs: the documents; ids are relative file paths (``paths.id_problem``: no ``..``, no hidden part,
            unique up to case) — subfolders are created; labels must hold no whitespace (an ``.ann`` line
            could not be read back).
        folder: the output folder.
        overwrite: write into an existing folder, replacing these documents' files there (those cardioner
            wrote).
        report: where kept-aside lines dropped (with their entities, or invalid) are counted.
        score_notes: write each span's confidence as an AnnotatorNotes line (``format_ann``).
    """
    folder = Path(folder)
    check_writable_ids([doc.id for doc in docs], "brat", folder)
    for doc in docs:
        check_labels(doc, r"\s", "a brat .ann line", folder)
    exists = check_output(folder, "folder", has_record, BRAT_OUTPUT)
    if not exists:
        with staged_output(folder, "folder", has_record, BRAT_OUTPUT) as staging:
            record: dict[str, set[str]] = {}
            lines = []
            for doc in progress(docs, desc=f"writing {folder.name}"):
                files = document_files(doc, report, score_notes)
                for relative, content in files:
                    make_folders(staging, relative)
                    (staging / relative).write_bytes(content)
                lines.append(record_lines(files, record))
            append_record(staging, "".join(lines))
        return
    if not overwrite:
        raise CorpusError("output already exists (refusing to overwrite)", folder)
    record = read_record(folder)
    check_brat_output(folder, docs, record)
    write_into_brat(folder, files_into(folder, progress(docs, desc=f"writing {folder.name}"), report,
                                       score_notes, record), record)


def write_into_brat(folder: Path, files: Iterable[tuple[str, bytes | None]],
                    record: dict[str, set[str]]) -> None:
    """Move ``files`` (``files_into``'s) into the existing brat output ``folder``, their hashes added to its
    record (``record``, as read from it) before any is moved in."""
    files = list(files)  # every file checked (and made) before the record or the folder changes
    append_record(folder, record_lines(files, record))
    write_into_folder(folder, files)


def document_files(doc: Document, report: ReadReport | None = None,
                   score_notes: bool = False) -> list[tuple[str, bytes]]:
    """(``ID.txt``, text bytes) and (``ID.ann``, annotation bytes) of one document."""
    ann = format_ann(doc, report, score_notes).encode("utf-8")
    return [(f"{doc.id}.txt", doc.text.encode("utf-8")), (f"{doc.id}.ann", ann)]


def _existing_files(folder: Path, doc_id: str, text: bytes,
                    record: dict[str, set[str]]) -> tuple[str, str]:
    """What is at document ``doc_id``'s ``.txt`` and ``.ann`` in ``folder``: each "absent", "same" (the
    ``.txt`` holds ``text``) or "ours" (bytes the record vouches for); anything else is a CorpusError naming
    the file, which is left as it is."""
    states = []
    for suffix in (".txt", ".ann"):
        path = inside(folder, f"{doc_id}{suffix}", "text file" if suffix == ".txt" else "annotation file")
        if not os.path.lexists(path):
            states.append("absent")
            continue
        content = path.read_bytes()
        if suffix == ".txt" and content == text:
            states.append("same")
        elif _sha256(content) in record.get(f"{doc_id}{suffix}", ()):
            states.append("ours")
        elif suffix == ".txt":
            raise CorpusError(f"exists and holds another text than document {doc_id!r}, and cardioner's "
                              f"record ({OUTPUT_RECORD}) does not show it wrote it, so it is left as it is: "
                              "write to another output folder", path)
        else:
            raise CorpusError(f"exists and cardioner's record ({OUTPUT_RECORD}) does not show it wrote these "
                              "bytes (a gold file, one corrected by hand, or one written before the record), "
                              "so it is left as it is: write to another output folder", path)
    return states[0], states[1]


def check_brat_output(folder: str | Path, docs: Iterable[Document],
                      record: dict[str, set[str]] | None = None) -> None:
    """Raise CorpusError, before anything is written, naming the first existing file of ``docs`` in the brat
    output ``folder`` that cardioner may not replace (see the module docstring); nothing to check when
    ``folder`` does not exist. ``docs`` may be a stream (one document at a time)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    record = read_record(folder) if record is None else record
    for doc in docs:
        _existing_files(folder, doc.id, doc.text.encode("utf-8"), record)


def files_into(folder: Path, docs, report: ReadReport | None = None, score_notes: bool = False,
               record: dict[str, set[str]] | None = None) -> Iterator[tuple[str, bytes | None]]:
    """The files to move into the existing ``folder`` (None: a file to delete first), pair by pair, in the
    order that never mismatches a pair; a file cardioner may not replace is a CorpusError
    (``_existing_files``)."""
    record = read_record(folder) if record is None else record
    for doc in docs:
        (txt_name, text), (ann_name, ann) = document_files(doc, report, score_notes)
        txt, existing_ann = _existing_files(folder, doc.id, text, record)
        if txt == "same":
            yield ann_name, ann
        elif txt == "ours":  # both replaced: the old .ann goes first, so no moment pairs it with the new text
            if existing_ann != "absent":
                yield ann_name, None
            yield txt_name, text
            yield ann_name, ann
        # an .ann without its .txt: pairing it with the new text for a moment would mismatch
        elif existing_ann != "absent":
            yield ann_name, ann
            yield txt_name, text
        else:
            yield txt_name, text
            yield ann_name, ann
