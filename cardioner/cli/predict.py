"""``cardioner predict``: annotate text files, a folder of them, or JSONL with an exported model."""

from __future__ import annotations

from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import echo, nothing_written, on_interrupt, run_or_exit, setup_logging
from cardioner.cli.flags import PREDICT_FLAGS, speaking_flags


def predict(
    model: options.ModelDir,
    input: Annotated[str, typer.Option(help="a .txt file, a folder of .txt files, or JSONL (id, text)")],
    output: Annotated[str, typer.Option(help="output folder (brat) or file (jsonl, tsv, html)")],
    format: Annotated[str, typer.Option(help="brat | jsonl | tsv | html (one page to look at)")] = "brat",
    batch_size: options.BatchSize = 32,
    max_length: options.ExportMaxLength = None,
    stride: options.ExportStride = None,
    show: Annotated[int, typer.Option(help="print the first N predicted entities (0: none)")] = 20,
    verbose: options.Verbose = False,
) -> None:
    """Predict entities (Viterbi for CRF models; long documents in overlapping windows) and write them."""
    from cardioner.inference import entity_table, predict_path  # when run (cli/__init__)

    setup_logging(verbose)
    on_interrupt(nothing_written(output))
    docs = run_or_exit(speaking_flags(predict_path, PREDICT_FLAGS), model, input, output, format, batch_size,
                       max_length, stride)
    total = sum(len(d.spans) for d in docs)
    table = entity_table(docs, limit=show)
    if table:
        echo(table + "\n")
    echo(f"{total} entities in {len(docs)} documents written to {output} ({format})")
