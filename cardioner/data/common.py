"""Helpers shared by the readers and writers: strict decoding, ids from paths, span checks and the
``data.span_errors`` policy, atomic writes (through ``cardioner.data.paths``), progress bars."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

from cardioner.data.document import CorpusError, Document, ReadReport, Span, span_problem
from cardioner.data.paths import staged_output
from cardioner.errors import ConfigError
from cardioner.values import InvalidValue, as_float

T = TypeVar("T")

#: folders with at least this many files get a progress bar (on a terminal)
PROGRESS_MIN_FILES = 200
BOM = "\ufeff"
FRAGMENTS_SORTED = "discontinuous span fragments put in text order"


def read_text(path: str | Path, allow_empty: bool = False, strip_bom: bool = False) -> str:
    """Read a UTF-8 file exactly as stored: no newline translation, a BOM kept as character 0 unless stripped.

    Args:
        path: the file.
        allow_empty: if False, an empty (or whitespace-only) file raises CorpusError.
        strip_bom: drop a leading BOM (U+FEFF). Data files (JSONL, CoNLL, TSV, ``.ann``) strip it: Windows
            tools write one, and it is no character of the data; a text whose offsets count it (brat ``.txt``,
            TSV texts, inputs to predict) keeps it.

    Returns:
        The decoded text.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError("no such file", path) from None
    except OSError as error:  # a folder, a name too long, no permission
        raise CorpusError(f"cannot read the file ({error.strerror or error})", path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        bad = data[err.start : err.end]
        raise CorpusError(
            f"invalid UTF-8 at byte offset {err.start} (bytes {bad!r}: {err.reason})", path, line
        ) from None
    if strip_bom:
        text = text.removeprefix(BOM)
    if not allow_empty and not text.strip():
        raise CorpusError("empty file" if not text else "file contains only whitespace", path)
    return text


def split_lines(text: str) -> list[str]:
    """Lines of ``text`` without their ``\\n`` or ``\\r\\n`` ending (a final newline opens no empty line)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


#: how much of a file is looked at to tell its format
SNIFF_BYTES = 65536


def head_lines(path: str | Path) -> list[str]:
    """The non-blank lines of the first SNIFF_BYTES of ``path`` (BOM dropped,
    bad bytes replaced): for guessing a file's format, and for telling
    whether an existing output holds an earlier output of that format."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES).decode("utf-8", errors="replace").removeprefix(BOM)
    return [line for line in split_lines(head) if line.strip()]


def relative_id(path: Path, root: Path, suffix: str) -> str:
    """A document id: ``path`` relative to ``root`` with
    ``suffix`` removed, in POSIX form (``abstracts/S0370``)."""
    rel = path.relative_to(root).as_posix()
    return rel[: -len(suffix)] if suffix and rel.endswith(suffix) else rel


def progress(items: list[T], desc: str) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar when there are many (and stderr is a terminal)."""
    if len(items) < PROGRESS_MIN_FILES:
        return items
    return tqdm(items, desc=desc, unit="file", disable=None)


def span_strings(doc: Document, extent: bool = False) -> list[str]:
    """The annotated string of each span (from the text, or
    as read when the text is missing, e.g. a bare TSV).

    Args:
        doc: the document.
        extent: give a discontinuous span's whole extent ``text[start:end]`` instead of its fragments joined
            by a space (the TSV holds start..end).
    """
    stored = doc.meta.get("span_texts")
    if doc.meta.get("text_missing") and stored is not None and len(stored) == len(doc.spans):
        return list(stored)
    if extent:
        return [doc.text[span.start : span.end] for span in doc.spans]
    return [span.text_in(doc.text) for span in doc.spans]


#: decimals of a span's confidence as the writers put it (JSONL "score", the TSV score column, brat notes)
SCORE_DECIMALS = 4


def format_score(score: float) -> str:
    """A span's confidence as written: ``SCORE_DECIMALS`` decimals (``0.9731``)."""
    return f"{score:.{SCORE_DECIMALS}f}"


def read_score(value: object, where: str | Path | None, line: int | None,
               text: bool = False) -> float | None:
    """A span's confidence as read from a file: None when absent (``None``, or an empty TSV cell), else a
    number in [0, 1]; anything else is a CorpusError naming the file and line.

    Args:
        value: the JSON value, or the TSV cell (with ``text``).
        where: the file (for the message).
        line: the line or record number (for the message).
        text: the value is text (a TSV cell) to parse.
    """
    if value is None or (text and value == ""):
        return None
    try:
        score = as_float(value, text=text)
    except InvalidValue as error:
        raise CorpusError(f"a span's score {error}", where, line) from None
    if not 0.0 <= score <= 1.0:
        raise CorpusError(f"a span's score must lie in [0, 1], got {score}", where, line)
    return score


def pieces_text(text: str, pieces: Sequence[tuple[int, int]]) -> str:
    """The string of ``pieces`` in the order given, joined by
    a space (as a brat ``T`` line or JSONL holds it)."""
    return " ".join(text[s:e] for s, e in pieces)


def make_span(
    label: str, pieces: Sequence[tuple[int, int]], text: str | None, doc_id: str, path: str | Path | None,
    line: int | None, report: ReadReport | None = None,
) -> Span:
    """A checked span from its (start, end) pieces, in whatever order a file lists them.

    The fragments of a discontinuous span are put in text order (counted in ``report``), so that
    ``start <= end``; overlapping fragments raise CorpusError, as do offsets ``check_span`` rejects.

    Args:
        label: the entity type.
        pieces: one (start, end) for a contiguous span, several for a discontinuous one.
        text: the document text, or None when it is missing.
        doc_id: the document id (for the message).
        path: the file (for the message).
        line: the line or record number (for the message).
        report: where reordered fragments are counted.
    """
    ordered = tuple(sorted(pieces))
    span = Span(ordered[0][0], ordered[-1][1], label, ordered if len(ordered) > 1 else ())
    check_span(span, text, doc_id, path, line)
    for (s1, e1), (s2, e2) in zip(ordered[:-1], ordered[1:], strict=True):
        if s2 < e1:
            raise CorpusError(
                f"document {doc_id!r}: fragments {s1}-{e1} and {s2}-{e2} of a {label} span overlap",
                path,
                line,
            )
    if ordered != tuple(pieces) and report is not None:
        report.note("repaired", FRAGMENTS_SORTED, f"{path}:{line}" if line is not None else str(path))
    return span


#: what a reader does with a span whose offsets do not fit its annotated string (config key data.span_errors)
SPAN_ERRORS = ("error", "skip", "realign")
#: how far realign looks for a span's annotated string, in characters either way
REALIGN_WINDOW = 10
SPAN_ERRORS_HINT = (
    "set data.span_errors=skip to leave such spans out, or data.span_errors=realign to move each "
    f"to its annotated string within {REALIGN_WINDOW} characters"
)
SKIPPED_NOTE = "spans left out whose offsets do not fit their annotated string (data.span_errors=skip)"
UNPLACED_NOTE = (f"spans left out whose annotated string is not within {REALIGN_WINDOW} characters "
                 "(data.span_errors=realign)")
REALIGNED_NOTE = "spans moved to their annotated string (data.span_errors=realign)"

Pieces = tuple[tuple[int, int], ...]


def check_span_errors(policy: str) -> str:
    """``policy`` if it is one of SPAN_ERRORS, else ConfigError naming data.span_errors."""
    if policy not in SPAN_ERRORS:
        raise ConfigError(f"data.span_errors must be one of {', '.join(SPAN_ERRORS)}; got {policy!r}")
    return policy


def _nearest_shift(pieces: Pieces, fits: Callable[[Pieces], bool]) -> int | None:
    """The smallest shift (the earlier position on a tie) within REALIGN_WINDOW that makes ``pieces`` fit."""
    for distance in range(1, REALIGN_WINDOW + 1):
        for shift in (-distance, distance):
            if fits(tuple((s + shift, e + shift) for s, e in pieces)):
                return shift
    return None


def fit_span(pieces: Pieces, text: str, matches: Callable[[Pieces], bool] | None,
             mismatch: Callable[[Pieces], str], policy: str, report: ReadReport, where: str | Path | None,
             line: int | None, label: str) -> Pieces | None:
    """The pieces of a span checked against its annotated string, under the ``data.span_errors`` policy.

    Offsets that run past the text or cover another string than the annotated one are an error (``error``,
    naming the option), left out and counted (``skip``), or moved as a whole by the smallest shift within
    REALIGN_WINDOW characters that makes them cover the annotated string — each move listed in
    ``report.moves``; left out and counted when there is none (``realign``).

    Args:
        pieces: (start, end) of each fragment, as the file lists them.
        text: the document text.
        matches: whether pieces (inside the text) cover the annotated string;
            None when the file gives no string (then only pieces past the end do
            not fit, and realign has nothing to look for: they are left out).
        mismatch: the problem, for pieces that do not fit (for the message).
        policy: "error", "skip" or "realign".
        report: where skipped spans are counted and moves listed.
        where: the file (for messages).
        line: the line or record (for messages).
        label: the entity type (for the report).

    Returns:
        The pieces (moved, under realign), or None when the span is left out.
    """
    def fits(candidate: Pieces) -> bool:
        return all(0 <= s and e <= len(text) for s, e in candidate) and (
            matches is None or matches(candidate)
        )

    if fits(pieces):
        return pieces
    problem = mismatch(pieces)
    if policy == "error":
        raise CorpusError(f"{problem}; {SPAN_ERRORS_HINT}", where, line)
    location = f"{where}:{line}" if line is not None else str(where)
    if policy == "realign":
        shift = _nearest_shift(pieces, fits) if matches is not None else None
        if shift is not None:
            moved = tuple((s + shift, e + shift) for s, e in pieces)
            report.note("repaired", REALIGNED_NOTE)
            report.moves.append(f"{location}: {label} {_offsets(pieces)} -> {_offsets(moved)} ({shift:+d}) "
                                f"{pieces_text(text, moved)!r}")
            return moved
        report.note("skipped", UNPLACED_NOTE, f"{location}: {problem}")
        return None
    report.note("skipped", SKIPPED_NOTE, f"{location}: {problem}")
    return None


def _offsets(pieces: Pieces) -> str:
    return ";".join(f"{s}-{e}" for s, e in pieces)


def read_span(label: str, pieces: Pieces, text: str | None, doc_id: str, where: str | Path | None,
              line: int | None, report: ReadReport, policy: str = "error",
              matches: Callable[[Pieces], bool] | None = None,
              mismatch: Callable[[Pieces], str] | None = None) -> Span | None:
    """A span read from a file: malformed offsets are errors, offsets that do not fit follow ``policy``.

    Negative, reversed or empty pieces and overlapping fragments are always a CorpusError. Pieces past the end
    of the text, or (with ``matches``) covering another string than the annotated one, follow
    ``data.span_errors`` (``fit_span``). Without a text (a bare TSV) only the first kind of check is made.

    Args:
        label, pieces, doc_id, where, line: as for ``make_span``.
        text: the document text, or None when it is missing.
        report: where repairs, moves and left-out spans are counted.
        policy: "error", "skip" or "realign" (data.span_errors).
        matches: whether pieces cover the annotated string (None: no annotated string to check).
        mismatch: the problem of pieces that cover another string (for the message).

    Returns:
        The span, or None when the policy leaves it out.
    """
    make_span(label, pieces, None, doc_id, where, line)
    if text is not None:
        def explain(candidate: Pieces) -> str:
            outside = span_problem(doc_id, Span(0, 0, label, tuple(candidate)), len(text))
            return outside if outside is not None or mismatch is None else mismatch(candidate)

        fitted = fit_span(pieces, text, matches, explain, policy, report, where, line, label)
        if fitted is None:
            return None
        pieces = fitted
    return make_span(label, pieces, text, doc_id, where, line, report)


def check_labels(doc: Document, forbidden: str, format_name: str, path: str | Path | None = None) -> None:
    """Raise CorpusError naming the document and the label when a label is empty or matches ``forbidden``.

    Args:
        doc: the document about to be written.
        forbidden: a regex of what the format cannot hold in a label (brat: any whitespace).
        format_name: the format (for the message).
        path: the output (for the message).
    """
    for span in doc.spans:
        found = re.search(forbidden, span.label)
        if not span.label or found is not None:
            what = "is empty" if not span.label else f"holds {found.group()!r} at character {found.start()}"
            raise CorpusError(
                f"document {doc.id!r}: label {span.label!r} (span {span.start}-{span.end}) {what}, "
                f"which {format_name} cannot hold",
                path,
            )


def check_unique_ids(
    docs: Sequence[Document], where: str | Path | None, order: str = "reading order"
) -> None:
    """Raise CorpusError naming the id and both positions when two documents share an id (one would be lost).

    Args:
        docs: the documents.
        where: the file or folder read or written (for the message).
        order: what the positions count (for the message).
    """
    first_seen: dict[str, int] = {}
    for i, doc in enumerate(docs):
        if doc.id in first_seen:
            raise CorpusError(
                f"duplicate document id {doc.id!r} (documents {first_seen[doc.id] + 1} and {i + 1} "
                f"in {order})",
                where,
            )
        first_seen[doc.id] = i


def check_span(span: Span, text: str | None, doc_id: str, path: str | Path | None, line: int | None) -> None:
    """Raise CorpusError (with file and line) for negative,
    reversed, empty or out-of-text offsets of ``span``.

    Args:
        span: the span.
        text: the document text, or None when it is missing (then only sign, order and emptiness are checked).
        doc_id: the document id (for the message).
        path: the file (for the message).
        line: the line or record number (for the message).
    """
    problem = span_problem(doc_id, span, None if text is None else len(text))
    if problem is not None:
        raise CorpusError(problem, path, line)


@contextmanager
def atomic_path(target: str | Path, is_dir: bool = False, overwrite: bool = True,
                looks_ours: Callable[[Path], bool] | None = None,
                what: str = "an earlier output") -> Iterator[Path]:
    """Yield a path to write; it becomes ``target`` in one
    rename when the block completes (``paths.staged_output``).

    Args:
        target: the final file or folder.
        is_dir: write a folder (else a file).
        overwrite: replace an existing target (else an existing target is an error).
        looks_ours: whether an existing target holds an earlier output it may replace (None: any regular file,
            only an empty folder); anything else is refused and left as it is.
        what: what ``looks_ours`` recognises (for the message).

    Returns:
        A context manager yielding the temporary path. Nothing half-written survives an exception or a kill.
    """
    target = Path(target)
    if not overwrite and os.path.lexists(target):
        raise CorpusError("output already exists (refusing to overwrite)", target)
    with staged_output(target, "folder" if is_dir else "file", looks_ours, what) as temporary:
        yield temporary


def write_text_atomic(path: str | Path, text: str, looks_ours: Callable[[Path], bool] | None = None,
                      what: str = "an earlier output") -> Path:
    """Write ``text`` (UTF-8) to ``path`` through ``atomic_path``: a reader never sees half a file, a crash
    keeps the old one, and an existing file that ``looks_ours`` rejects is refused. Returns ``path``."""
    with atomic_path(path, looks_ours=looks_ours, what=what) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)
