"""Helpers shared by the readers and writers: strict decoding, ids from paths, atomic writes, progress bars."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

from cardioner.data.document import CorpusError, Document, Span

T = TypeVar("T")

#: folders with at least this many files get a progress bar (on a terminal)
PROGRESS_MIN_FILES = 200


def read_text(path: str | Path, allow_empty: bool = False) -> str:
    """Read a UTF-8 file exactly as stored: no newline translation, a BOM kept as character 0.

    Args:
        path: the file.
        allow_empty: if False, an empty (or whitespace-only) file raises CorpusError.

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
    if not allow_empty and not text.strip():
        raise CorpusError("empty file" if not text else "file contains only whitespace", path)
    return text


def split_lines(text: str) -> list[str]:
    """Lines of ``text`` without their ``\\n`` or ``\\r\\n`` ending (a final newline opens no empty line)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def relative_id(path: Path, root: Path, suffix: str) -> str:
    """A document id: ``path`` relative to ``root`` with ``suffix`` removed, in POSIX form (``abstracts/S0370``)."""
    rel = path.relative_to(root).as_posix()
    return rel[: -len(suffix)] if suffix and rel.endswith(suffix) else rel


def progress(items: list[T], desc: str) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar when there are many (and stderr is a terminal)."""
    if len(items) < PROGRESS_MIN_FILES:
        return items
    return tqdm(items, desc=desc, unit="file", disable=None)


def span_strings(doc: Document) -> list[str]:
    """The annotated string of each span (from the text, or as read when the text is missing, e.g. a bare TSV)."""
    stored = doc.meta.get("span_texts")
    if doc.meta.get("text_missing") and stored is not None and len(stored) == len(doc.spans):
        return list(stored)
    return [span.text_in(doc.text) for span in doc.spans]


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
