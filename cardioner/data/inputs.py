"""The documents ``predict`` annotates, read one at a time: a ``.txt`` file, a folder of them (recursive), or
JSONL with ``id`` and ``text`` — in memory that does not grow with their number.

Texts are read exactly as stored (no newline translation, a BOM kept), so offsets index the file. In a folder,
documents come in ``corpus_files`` order (sorted paths), hidden files and folders are not read and a symbolic
link is an error (``paths.walk_corpus_files``); a document's id is its path under the folder without ``.txt``.
JSONL is read line by line with the JSONL reader's rules (``jsonl.record_to_document``; a record without
``"id"`` gets ``NAME#line``); errors name the file and the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from cardioner.data.common import BOM, read_text, relative_id
from cardioner.data.document import CorpusError, Document, ReadReport
from cardioner.data.jsonl import record_to_document
from cardioner.data.paths import walk_corpus_files
from cardioner.values import InvalidValue, loads_json

JSONL_SUFFIXES = (".jsonl", ".json")


def iter_inputs(path: str | Path) -> Iterator[Document]:
    """The documents of ``path``, one at a time (see the module docstring).

    Raises:
        CorpusError: no such input, a folder without ``.txt`` files, a record or file that cannot be read
            (naming the file and line).
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError("no such file or folder", path)
    if path.is_file() and path.suffix in JSONL_SUFFIXES:
        yield from _jsonl_documents(path)
    elif path.is_file():
        yield Document(path.stem, read_text(path, allow_empty=True), [], {"path": str(path)})
    else:
        found = False
        for file in walk_corpus_files(path):
            if file.suffix == ".txt":
                found = True
                yield Document(relative_id(file, path, ".txt"), read_text(file, allow_empty=True), [],
                               {"path": str(file)})
        if not found:
            raise CorpusError("no .txt files in the folder", path)


def count_inputs(path: str | Path) -> int | None:
    """How many documents ``iter_inputs`` will give (for a progress bar), cheaply: the non-blank lines of
    JSONL, the ``.txt`` files of a folder (names only); None when ``path`` cannot be read."""
    path = Path(path)
    try:
        if path.is_file() and path.suffix in JSONL_SUFFIXES:
            with open(path, "rb") as handle:
                return sum(1 for line in handle if line.strip())
        if path.is_file():
            return 1
        return sum(1 for file in walk_corpus_files(path) if file.suffix == ".txt")
    except (OSError, CorpusError):
        return None


def _jsonl_documents(path: Path) -> Iterator[Document]:
    """Documents of a JSONL file, decoded and checked line by line (a BOM before the first record dropped); a
    file without any record is an error (predict would write an empty output and say nothing of it)."""
    report = ReadReport()
    records = 0
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise CorpusError(f"invalid UTF-8 at byte {error.start} of the line ({error.reason})", path,
                                  line_no) from None
            if line_no == 1:
                line = line.removeprefix(BOM)
            if not line.strip():
                continue
            try:
                record = loads_json(line)
            except json.JSONDecodeError as error:
                raise CorpusError(f"not valid JSON ({error.msg} at column {error.colno}): {line[:80]!r}",
                                  path, line_no) from None
            except InvalidValue as error:
                raise CorpusError(f"not valid data: {error}", path, line_no) from None
            records += 1
            yield record_to_document(record, f"{path.stem}#{line_no}", report, where=path, record_no=line_no)
    if not records:
        raise CorpusError("empty file" if not path.stat().st_size else "no records: only blank lines", path)
