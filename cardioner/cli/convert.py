"""``cardioner convert``: read a corpus in one format, write
it in another, print what was read and skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import nothing_written, on_interrupt, run_or_exit
from cardioner.cli.flags import CONVERT_FLAGS, speaking_flags


def convert(
    input: Annotated[
        Path,
        typer.Option("--input", "-i",
                     metavar="PATH",
                     help="corpus: brat folder, CoNLL/JSONL/TSV file or folder, " "HF save_to_disk folder"),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="PATH",
                                                           help="output file (a folder for brat)")],
    to: Annotated[str, typer.Option("--to", metavar="FORMAT",
                                            help="output format: brat | jsonl | conll | tsv")],
    format: Annotated[
        str | None,
        typer.Option("--format", metavar="FORMAT",
                                 help="input format: brat | conll | jsonl | tsv | hf " "(default: detect)"),
    ] = None,
    texts_dir: Annotated[
        Path | None, typer.Option("--texts-dir", metavar="DIR", help="NAME.txt files for a TSV input")
    ] = None,
    scheme: Annotated[str, typer.Option("--scheme", metavar="SCHEME",
                                                    help="CoNLL output tags: IOB2 | BIOES")] = "IOB2",
    resolve_overlaps: Annotated[
        bool,
        typer.Option(
            "--resolve-overlaps",
            help="drop overlapping spans, keeping the " "longest (needed to write nested corpora as CoNLL)",
        ),
    ] = False,
    span_errors: options.SpanErrors = "error",
) -> None:
    """Convert a corpus between brat, CoNLL, JSONL and MultiCardioNER TSV (written atomically)."""
    from cardioner.data.io import convert_corpus  # when run (cli/__init__)

    on_interrupt(nothing_written(output))
    summary = run_or_exit(speaking_flags(convert_corpus, CONVERT_FLAGS), str(input), str(output), to, format,
                          str(texts_dir) if texts_dir else None, scheme, resolve_overlaps, span_errors)
    typer.echo(summary)
