"""One entry point for every corpus format: ``detect_format``, ``read_corpus`` and ``write_corpus``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cardioner import labels
from cardioner.data.brat import read_brat, write_brat
from cardioner.data.common import BOM, check_unique_ids, is_hidden, progress, split_lines
from cardioner.data.conll import DOCSTART, read_conll, write_conll
from cardioner.data.document import CorpusError, Document, ReadReport
from cardioner.data.hf import read_hf
from cardioner.data.jsonl import read_jsonl, write_jsonl
from cardioner.data.tsv import HEADER, read_tsv, write_tsv

READ_FORMATS = ("brat", "conll", "jsonl", "tsv", "hf")
WRITE_FORMATS = ("brat", "conll", "jsonl", "tsv")
_SNIFF_BYTES = 65536


def _data_files(folder: Path) -> list[Path]:
    """Files under ``folder`` that may hold data (not hidden, not ``*.md``, not ``LICENSE*``), sorted."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not is_hidden(p, folder)
        and p.suffix.lower() != ".md" and not p.name.upper().startswith("LICENSE")
    )


def _sniff_file(path: Path) -> str | None:
    """The format of one file from its name and first lines, or None when it does not look like any.

    A CoNLL file is recognised by its tag prefixes alone, so that the reader, not this guess, says what is wrong
    with a tag (with its line).
    """
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES).decode("utf-8", errors="replace").removeprefix(BOM)
    lines = [line for line in split_lines(head) if line.strip()]
    if path.suffix.lower() in (".jsonl", ".json") or (lines and lines[0].lstrip(" ").startswith("{")):
        return "jsonl"
    if lines and lines[0].split("\t")[: len(HEADER)] == HEADER:
        return "tsv"
    rows = [line.split("\t") if "\t" in line else line.split() for line in lines[:50]]
    rows = [row for row in rows if row and row[0] != DOCSTART]
    if rows and all(len(row) >= 2 for row in rows):
        try:
            tags = [labels.split_tag(row[-1].strip()) for row in rows]
        except ValueError:
            return None
        return "conll" if all(prefix == labels.OUTSIDE or entity_type for prefix, entity_type in tags) else None
    return None


def detect_format(path: str | Path | Any) -> str:
    """Guess the corpus format of ``path``: "brat", "conll", "jsonl", "tsv" or "hf".

    Args:
        path: a file, a folder, or a ``datasets`` object.

    Returns:
        The format name.
    """
    if not isinstance(path, (str, Path)):
        return "hf"
    path = Path(path)
    if not path.exists():
        raise CorpusError("no such file or folder", path)
    if path.is_file():
        found = _sniff_file(path)
        if found is None:
            raise CorpusError("cannot tell the format of this file (not JSONL, MultiCardioNER TSV or CoNLL with "
                              "a tag column); name it with --format", path)
        return found
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        return "hf"
    if any(not is_hidden(p, path) for p in path.rglob("*.ann")):
        return "brat"
    files = _data_files(path)
    if not files:
        raise CorpusError("folder holds no data files", path)
    by_file = {p: _sniff_file(p) for p in files}
    found = set(by_file.values())
    if found == {None} and all(p.suffix == ".txt" for p in files):
        return "brat"  # .txt files without any .ann
    if None in found:
        odd = next(p for p, kind in by_file.items() if kind is None)
        raise CorpusError(f"cannot tell the format of {odd.relative_to(path)} (not JSONL, MultiCardioNER TSV or "
                          "CoNLL with a tag column); point at one sub-folder or name the format with --format", path)
    if len(found) != 1:
        raise CorpusError(f"folder mixes formats {sorted(found)}; point at one sub-folder", path)
    return found.pop()


def read_corpus(
    path: str | Path | Any, format: str | None = None, flat: bool = False, *, texts_dir: str | Path | None = None,
    label_names: Sequence[str] | None = None, split: str | None = None,
) -> tuple[list[Document], ReadReport]:
    """Read a corpus in any supported format.

    Args:
        path: a file, a folder (every data file in it, recursively), or a ``datasets`` object.
        format: "brat", "conll", "jsonl", "tsv" or "hf"; detected when None.
        flat: the task is flat (multi-class): overlapping spans raise CorpusError naming both, with the file and
            the line (brat ``T`` line, TSV row, JSONL record) or HF row.
        texts_dir: the ``NAME.txt`` folder for a TSV.
        label_names: names of integer ``ner_tags`` (JSONL/HF).
        split: one split of a DatasetDict.

    Returns:
        (documents, report of what was read, kept aside, repaired and skipped).
    """
    format = format or detect_format(path)
    if format not in READ_FORMATS:
        raise CorpusError(f"unknown format {format!r}; expected one of {', '.join(READ_FORMATS)}")
    report = ReadReport()
    if format == "hf":
        docs = read_hf(path, split=split, label_names=label_names, report=report, flat=flat)
    elif format == "brat":
        docs = read_brat(path, report, flat=flat)
    else:
        path = Path(path)
        if not path.exists():
            raise CorpusError("no such file or folder", path)
        files = [path] if path.is_file() else _data_files(path)
        if not files:
            raise CorpusError("folder holds no data files", path)
        docs = []
        for file in progress(files, desc=f"reading {path.name}"):
            prefix = file.stem if file == path else file.relative_to(path).with_suffix("").as_posix()
            if format == "conll":  # CoNLL tags cannot overlap
                docs.extend(read_conll(file, report, doc_prefix=prefix))
            elif format == "jsonl":
                docs.extend(read_jsonl(file, report, label_names=label_names, doc_prefix=prefix, flat=flat))
            else:
                docs.extend(read_tsv(file, texts_dir=texts_dir, report=report, flat=flat))
    if not docs:
        raise CorpusError("no documents read", path if isinstance(path, (str, Path)) else None)
    check_unique_ids(docs, path if isinstance(path, (str, Path)) else None)
    return docs, report


def write_corpus(docs: list[Document], path: str | Path, to: str, scheme: str = "IOB2",
                 report: ReadReport | None = None) -> None:
    """Write documents in format ``to`` (a temporary path renamed when complete).

    Args:
        docs: the documents.
        path: the output file (a folder for brat).
        to: "brat", "conll", "jsonl" or "tsv".
        scheme: the CoNLL tag scheme ("IOB2" or "BIOES").
        report: where a writer notes what it had to change or leave out (spans widened to CoNLL tokens, brat
            lines dropped with their entities).
    """
    if to not in WRITE_FORMATS:
        raise CorpusError(f"unknown output format {to!r}; expected one of {', '.join(WRITE_FORMATS)}")
    check_unique_ids(docs, path, "the documents to write")  # one would overwrite (brat) or merge into (TSV) the other
    if to in ("brat", "conll"):
        missing = [doc.id for doc in docs if doc.meta.get("text_missing")]
        if missing:
            raise CorpusError(f"document {missing[0]!r} has no text (read from a TSV without texts_dir), so it "
                              f"cannot be written as {to} ({len(missing)} such documents)")
    if to == "brat":
        write_brat(docs, path, report=report)
    elif to == "conll":
        write_conll(docs, path, scheme=scheme, report=report)
    elif to == "jsonl":
        write_jsonl(docs, path)
    else:
        write_tsv(docs, path)
