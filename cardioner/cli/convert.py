"""``cardioner convert``: read a corpus in one format, write it in another, print what was read and skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cardioner.cli.common import run_or_exit
from cardioner.data.common import SPAN_ERRORS
from cardioner.data.document import resolve_overlaps
from cardioner.data.io import WRITE_FORMATS, check_output_target, read_corpus, write_corpus


def convert_corpus(input: str, output: str, to: str, format: str | None = None,
                   texts_dir: str | None = None, scheme: str = "IOB2", resolve: bool = False,
                   span_errors: str = "error") -> str:
    """Read ``input`` and write it to ``output`` in format ``to``; returns the report summary.

    Args:
        input: the corpus (file or folder).
        output: the output file (a folder for brat).
        to: "brat", "conll", "jsonl" or "tsv".
        format: the input format (detected when None).
        texts_dir: the ``NAME.txt`` folder for a TSV input.
        scheme: the CoNLL output tag scheme.
        resolve: drop overlapping spans (keeping the longest), counted in the report, e.g. for CoNLL output; brat
            notes and relations on a dropped span are dropped with it (and counted), the others stay on theirs.
        span_errors: spans whose offsets do not fit their annotated string: "error", "skip" or "realign".

    Returns:
        The ReadReport summary (including what the writer had to change).
    """
    if to not in WRITE_FORMATS:
        raise ValueError(f"--to must be one of {', '.join(WRITE_FORMATS)}, got {to!r}")
    check_output_target(output, to)  # before reading: an existing file that is not ours is refused at once
    docs, report = read_corpus(input, format=format, texts_dir=texts_dir, span_errors=span_errors)
    if resolve:
        for i, doc in enumerate(docs):
            docs[i], dropped = resolve_overlaps(doc, report)
            if dropped:
                report.note("skipped", "overlapping spans dropped by --resolve-overlaps (longest kept)", doc.id,
                            n=dropped)
    write_corpus(docs, output, to, scheme=scheme, report=report)
    return report.summary() + f"\nwrote {len(docs)} documents as {to} to {output}"


def convert(
    input: Annotated[Path, typer.Option("--input", "-i", help="corpus: brat folder, CoNLL/JSONL/TSV file or folder, "
                                        "HF save_to_disk folder")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output file (a folder for brat)")],
    to: Annotated[str, typer.Option("--to", help="output format: brat | jsonl | conll | tsv")],
    format: Annotated[str | None, typer.Option("--format", help="input format: brat | conll | jsonl | tsv | hf "
                                                  "(default: detect)")] = None,
    texts_dir: Annotated[Path | None, typer.Option("--texts-dir", help="NAME.txt files for a TSV input")] = None,
    scheme: Annotated[str, typer.Option("--scheme", help="CoNLL output tags: IOB2 | BIOES")] = "IOB2",
    resolve_overlaps: Annotated[bool, typer.Option("--resolve-overlaps", help="drop overlapping spans, keeping the "
                                                   "longest (needed to write nested corpora as CoNLL)")] = False,
    span_errors: Annotated[str, typer.Option("--span-errors", help="spans whose offsets do not fit their annotated "
                                             f"string: {' | '.join(SPAN_ERRORS)} (data.span_errors)")] = "error",
) -> None:
    """Convert a corpus between brat, CoNLL, JSONL and MultiCardioNER TSV (written atomically)."""
    summary = run_or_exit(convert_corpus, str(input), str(output), to, format,
                          str(texts_dir) if texts_dir else None, scheme, resolve_overlaps, span_errors)
    typer.echo(summary)
