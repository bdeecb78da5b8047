"""Helpers shared by the readers and writers: strict decoding, ids from paths, atomic writes, progress bars."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

from cardioner.data.document import CorpusError, Document, ReadReport, Span

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
        strip_bom: drop a leading BOM (U+FEFF). Data files (JSONL, CoNLL, TSV, ``.ann``) strip it: Windows tools
            write one, and it is no character of the data; a text whose offsets count it (brat ``.txt``, TSV
            texts, inputs to predict) keeps it.

    Returns:
        The decoded text.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError("no such file", path) from None
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


def is_hidden(path: Path, root: Path) -> bool:
    """Whether ``path`` (under ``root``) is or lies in a hidden entry: ``.ipynb_checkpoints``, a leftover ``.X.tmp``."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def relative_id(path: Path, root: Path, suffix: str) -> str:
    """A document id: ``path`` relative to ``root`` with ``suffix`` removed, in POSIX form (``abstracts/S0370``)."""
    rel = path.relative_to(root).as_posix()
    return rel[: -len(suffix)] if suffix and rel.endswith(suffix) else rel


def progress(items: list[T], desc: str) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar when there are many (and stderr is a terminal)."""
    if len(items) < PROGRESS_MIN_FILES:
        return items
    return tqdm(items, desc=desc, unit="file", disable=None)


def span_strings(doc: Document, extent: bool = False) -> list[str]:
    """The annotated string of each span (from the text, or as read when the text is missing, e.g. a bare TSV).

    Args:
        doc: the document.
        extent: give a discontinuous span's whole extent ``text[start:end]`` instead of its fragments joined by
            a space (the TSV holds start..end).
    """
    stored = doc.meta.get("span_texts")
    if doc.meta.get("text_missing") and stored is not None and len(stored) == len(doc.spans):
        return list(stored)
    if extent:
        return [doc.text[span.start : span.end] for span in doc.spans]
    return [span.text_in(doc.text) for span in doc.spans]


def pieces_text(text: str, pieces: Sequence[tuple[int, int]]) -> str:
    """The string of ``pieces`` in the order given, joined by a space (as a brat ``T`` line or JSONL holds it)."""
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
            raise CorpusError(f"document {doc_id!r}: fragments {s1}-{e1} and {s2}-{e2} of a {label} span overlap",
                              path, line)
    if ordered != tuple(pieces) and report is not None:
        report.note("repaired", FRAGMENTS_SORTED, f"{path}:{line}" if line is not None else str(path))
    return span


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
            raise CorpusError(f"document {doc.id!r}: label {span.label!r} (span {span.start}-{span.end}) {what}, "
                              f"which {format_name} cannot hold", path)


def check_unique_ids(docs: Sequence[Document], where: str | Path | None, order: str = "reading order") -> None:
    """Raise CorpusError naming the id and both positions when two documents share an id (one would be lost).

    Args:
        docs: the documents.
        where: the file or folder read or written (for the message).
        order: what the positions count (for the message).
    """
    first_seen: dict[str, int] = {}
    for i, doc in enumerate(docs):
        if doc.id in first_seen:
            raise CorpusError(f"duplicate document id {doc.id!r} (documents {first_seen[doc.id] + 1} and {i + 1} "
                              f"in {order})", where)
        first_seen[doc.id] = i


def check_span(span: Span, text: str | None, doc_id: str, path: str | Path | None, line: int | None) -> None:
    """Raise CorpusError (with file and line) for negative, reversed or out-of-text offsets of ``span``.

    Args:
        span: the span.
        text: the document text, or None when it is missing (then only sign and order are checked).
        doc_id: the document id (for the message).
        path: the file (for the message).
        line: the line or record number (for the message).
    """
    try:
        Document(doc_id, text if text is not None else "", [span]).check_spans()
    except CorpusError as err:
        if text is None and "past the end" in err.problem:
            return
        raise CorpusError(err.problem, path, line) from None


def _umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | Path, is_dir: bool = False, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only when the block completes.

    Args:
        target: the final file or folder.
        is_dir: create a temporary folder (else a file path).
        overwrite: replace an existing target (a non-empty folder is replaced only when True).

    Returns:
        A context manager yielding the temporary path. Nothing half-written survives an exception.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        raise CorpusError("output already exists (refusing to overwrite)", target)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    tmp.chmod((0o777 if is_dir else 0o666) & ~_umask())  # mkstemp/mkdtemp make 0600/0700, private to the owner
    try:
        yield tmp
        if is_dir:
            if target.is_dir():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                target.rename(old)
                tmp.rename(target)
                shutil.rmtree(old)
            else:
                if target.exists():
                    target.unlink()
                tmp.rename(target)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through ``atomic_path``: a reader never sees half a file, a crash keeps
    the old one. Returns ``path``."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)
