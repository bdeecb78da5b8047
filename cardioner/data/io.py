"""One entry point for every corpus format: ``detect_format``, ``read_corpus``, ``write_corpus`` and
``convert_corpus`` (one format read, another written)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cardioner.data.brat import BRAT_OUTPUT, has_record, read_brat, write_brat
from cardioner.data.common import check_span_errors, check_unique_ids, head_lines, progress
from cardioner.data.conll import looks_like_conll, read_conll, write_conll
from cardioner.data.document import CorpusError, Document, ReadReport, resolve_overlaps
from cardioner.data.hf import read_hf
from cardioner.data.jsonl import looks_like_jsonl, read_jsonl, write_jsonl
from cardioner.data.paths import check_not_input, check_output, check_writable_ids, corpus_files
from cardioner.data.tsv import looks_like_tsv, read_tsv, write_tsv
from cardioner.errors import ConfigError
from cardioner.values import counted

READ_FORMATS = ("brat", "conll", "jsonl", "tsv", "hf")
WRITE_FORMATS = ("brat", "conll", "jsonl", "tsv")
#: what an existing output of each format must look like to be replaced (anything else is left as it is)
OUTPUT_CHECKS = {
    "brat": ("folder", has_record, BRAT_OUTPUT),
    "conll": ("file", lambda path: looks_like_conll(head_lines(path)), "CoNLL"),
    "jsonl": ("file", lambda path: looks_like_jsonl(head_lines(path)), "JSON Lines"),
    "tsv": ("file", lambda path: looks_like_tsv(head_lines(path)), "a MultiCardioNER TSV"),
}


def _data_files(folder: Path, report: ReadReport | None = None) -> list[Path]:
    """Files under ``folder`` that may hold data (not hidden, not ``*.md``, not ``LICENSE*``), sorted; a
    symbolic link inside it is a CorpusError (``paths.corpus_files``)."""
    return [p for p in corpus_files(folder, report)
            if p.suffix.lower() != ".md" and not p.name.upper().startswith("LICENSE")]


def _sniff_file(path: Path) -> str | None:
    """The format of one file from its name and first lines, or None when it does not look like any."""
    lines = head_lines(path)
    if path.suffix.lower() in (".jsonl", ".json") or looks_like_jsonl(lines):
        return "jsonl"
    if looks_like_tsv(lines):
        return "tsv"
    return "conll" if looks_like_conll(lines) else None


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
            raise CorpusError(
                "cannot tell the format of this file (not JSONL, MultiCardioNER TSV or CoNLL with "
                "a tag column); name it (data.format)",
                path,
            )
        return found
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        return "hf"
    files = _data_files(path)
    if any(p.suffix == ".ann" for p in files):
        return "brat"
    if not files:
        raise CorpusError("folder holds no data files", path)
    by_file = {p: _sniff_file(p) for p in files}
    found = set(by_file.values())
    if found == {None} and all(p.suffix == ".txt" for p in files):
        return "brat"  # .txt files without any .ann
    if None in found:
        odd = next(p for p, kind in by_file.items() if kind is None)
        raise CorpusError(
            f"cannot tell the format of {odd.relative_to(path)} (not JSONL, MultiCardioNER TSV or "
            "CoNLL with a tag column); point at one sub-folder or name the format (data.format)",
            path,
        )
    if len(found) != 1:
        raise CorpusError(f"folder mixes formats {sorted(found)}; point at one sub-folder", path)
    return found.pop()


def read_corpus(
    path: str | Path | Any,
    format: str | None = None,
    flat: bool = False,
    *,
    texts_dir: str | Path | None = None,
    label_names: Sequence[str] | None = None,
    split: str | None = None,
    span_errors: str = "error",
) -> tuple[list[Document], ReadReport]:
    """Read a corpus in any supported format.

    Args:
        path: a file, a folder (every data file in it, recursively), or a ``datasets`` object.
        format: "brat", "conll", "jsonl", "tsv" or "hf"; detected when None.
        flat: the task is flat (multi-class): overlapping spans raise CorpusError naming both, with the file
            and the line (brat ``T`` line, TSV row, JSONL record) or HF row.
        texts_dir: the ``NAME.txt`` folder for a TSV.
        label_names: names of integer ``ner_tags`` (JSONL/HF).
        split: one split of a DatasetDict.
        span_errors: a span whose offsets do not fit its annotated string (brat ``T`` line, TSV row with
            ``texts_dir``, JSONL/HF span with ``"text"``) or run past the text: "error" (CorpusError naming
            data.span_errors), "skip" (left out, counted) or "realign" (moved to the nearest occurrence of its
            string within ``common.REALIGN_WINDOW`` characters, each move in ``report.moves``).

    Returns:
        (documents, report of what was read, kept aside, repaired, moved and skipped).
    """
    check_span_errors(span_errors)
    format = format or detect_format(path)
    if format not in READ_FORMATS:
        raise CorpusError(f"unknown format {format!r}; expected one of {', '.join(READ_FORMATS)}")
    report = ReadReport()
    if format == "hf":
        docs = read_hf(
            path, split=split, label_names=label_names, report=report, flat=flat, span_errors=span_errors
        )
    elif format == "brat":
        docs = read_brat(path, report, flat=flat, span_errors=span_errors)
    else:
        path = Path(path)
        if not path.exists():
            raise CorpusError("no such file or folder", path)
        files = [path] if path.is_file() else _data_files(path, report)
        if not files:
            raise CorpusError("folder holds no data files", path)
        docs = []
        for file in progress(files, desc=f"reading {path.name}"):
            prefix = file.stem if file == path else file.relative_to(path).with_suffix("").as_posix()
            if format == "conll":  # CoNLL tags cannot overlap
                docs.extend(read_conll(file, report, doc_prefix=prefix))
            elif format == "jsonl":
                docs.extend(read_jsonl(file, report, label_names=label_names, doc_prefix=prefix, flat=flat,
                                       span_errors=span_errors))
            else:
                docs.extend(
                    read_tsv(file, texts_dir=texts_dir, report=report, flat=flat, span_errors=span_errors)
                )
    if not docs:
        raise CorpusError("no documents read", path if isinstance(path, (str, Path)) else None)
    check_unique_ids(docs, path if isinstance(path, (str, Path)) else None)
    return docs, report


def check_output_target(path: str | Path, to: str) -> None:
    """Raise CorpusError, before any work, when ``path`` cannot receive format ``to``: an existing output that
    is not one of that format (it is never modified), a symbolic link, a file where a folder is wanted."""
    if to not in WRITE_FORMATS:
        raise CorpusError(f"unknown output format {to!r}; expected one of {', '.join(WRITE_FORMATS)}")
    check_output(path, *OUTPUT_CHECKS[to])


def write_corpus(docs: list[Document], path: str | Path, to: str, scheme: str = "IOB2",
                 report: ReadReport | None = None) -> None:
    """Write documents in format ``to``, crash-safely and only where ``paths`` allows.

    Args:
        docs: the documents; their ids must be writable as ``to`` (``paths.check_writable_ids``).
        path: the output file (a folder for brat): new, or an earlier output of that format.
        to: "brat", "conll", "jsonl" or "tsv".
        scheme: the CoNLL tag scheme ("IOB2" or "BIOES").
        report: where a writer notes what it had to change or leave out (spans widened to CoNLL tokens, brat
            lines dropped with their entities).
    """
    check_output_target(path, to)
    # a repeated id would overwrite (brat) or merge (TSV)
    check_writable_ids([doc.id for doc in docs], to, path)
    if to in ("brat", "conll"):
        missing = [doc.id for doc in docs if doc.meta.get("text_missing")]
        if missing:
            raise CorpusError(
                f"document {missing[0]!r} has no text (read from a TSV without texts_dir), so it "
                f"cannot be written as {to} ({counted(len(missing), 'such document')})"
            )
    if to == "brat":
        write_brat(docs, path, report=report)
    elif to == "conll":
        write_conll(docs, path, scheme=scheme, report=report)
    elif to == "jsonl":
        write_jsonl(docs, path)
    else:
        write_tsv(docs, path)


def convert_corpus(input: str | Path, output: str | Path, to: str, format: str | None = None,
                   texts_dir: str | Path | None = None, scheme: str = "IOB2", resolve: bool = False,
                   span_errors: str = "error") -> str:
    """Read ``input`` and write it to ``output`` in format ``to``; returns the report summary.

    Args:
        input: the corpus (file or folder).
        output: the output file (a folder for brat).
        to: "brat", "conll", "jsonl" or "tsv".
        format: the input format (detected when None).
        texts_dir: the ``NAME.txt`` folder for a TSV input.
        scheme: the CoNLL output tag scheme.
        resolve: drop overlapping spans (keeping the longest), counted in the report, e.g. for CoNLL output;
            brat notes and relations on a dropped span are dropped with it (and counted), the others stay on
            theirs.
        span_errors: spans whose offsets do not fit their annotated string: "error", "skip" or "realign".

    Returns:
        The ReadReport summary (including what the writer had to change).
    """
    if to not in WRITE_FORMATS:
        raise ConfigError(f"to must be one of {', '.join(WRITE_FORMATS)}, got {to!r}")
    check_not_input(output, input, inside_too=True)
    check_output_target(output, to)  # before reading: an existing file that is not ours is refused at once
    docs, report = read_corpus(input, format=format, texts_dir=texts_dir, span_errors=span_errors)
    if resolve:
        for i, doc in enumerate(docs):
            docs[i], dropped = resolve_overlaps(doc, report)
            if dropped:
                report.note("skipped", "overlapping spans dropped (longest kept)", doc.id, n=dropped)
    write_corpus(docs, output, to, scheme=scheme, report=report)
    return report.summary() + f"\nwrote {counted(len(docs), 'document')} as {to} to {output}"
