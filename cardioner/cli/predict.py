"""``cardioner predict``: annotate text files, a folder of them, or JSONL with an exported model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import echo, nothing_written, on_interrupt, run_or_exit, setup_logging
from cardioner.cli.flags import PREDICT_FLAGS, speaking_flags
from cardioner.values import counted


def interrupted_note(output: str) -> Callable[[], str]:
    """What Ctrl-C leaves: a partial output to go on with (--resume), or nothing written yet."""
    from cardioner.data.resumable import partial_folder  # when run (cli/__init__)

    def note() -> str:
        if partial_folder(output).exists():
            return (f"{output} is not complete (the documents written so far are kept); rerun the same "
                    "command with --resume to go on where it stopped")
        return nothing_written(output)()

    return note


def predict(
    model: options.ModelDir,
    input: Annotated[str, typer.Option(metavar="PATH",
                                       help="a .txt file, a folder of .txt files, or JSONL (id, text)")],
    output: Annotated[str, typer.Option(metavar="PATH",
                                        help="output folder (brat) or file (jsonl, tsv, html)")],
    format: Annotated[str, typer.Option(metavar="FORMAT",
                                        help="brat | jsonl | tsv | html (one page to look at)")] = "brat",
    batch_size: options.BatchSize = 32,
    max_length: options.ExportMaxLength = None,
    stride: options.ExportStride = None,
    dtype: options.Dtype = "auto",
    quantize: options.Quantize = "none",
    min_confidence: Annotated[float, typer.Option(
        metavar="P", help="leave out spans whose confidence is below this")] = 0.0,
    resume: Annotated[bool, typer.Option(help="continue an interrupted run into the same output")] = False,
    score_notes: Annotated[bool, typer.Option(
        help="brat: write each span's confidence as an AnnotatorNotes line (jsonl and tsv always carry it)")
    ] = False,
    chunk_size: Annotated[int, typer.Option(metavar="N",
                                            help="documents predicted and written together (memory holds "
                                                 "one chunk)")] = 1024,
    show: Annotated[int, typer.Option(metavar="N",
                                      help="print the first N predicted entities (0: none)")] = 20,
    verbose: options.Verbose = False,
) -> None:
    """Predict entities (Viterbi for CRF models; long documents in overlapping windows), each with its
    confidence, and write them as they come (a killed run continues with --resume)."""
    from cardioner.inference import entity_table, predict_path  # when run (cli/__init__)

    setup_logging(verbose)
    on_interrupt(interrupted_note(output))
    summary = run_or_exit(speaking_flags(predict_path, PREDICT_FLAGS), model, input, output, format,
                          batch_size=batch_size, max_length=max_length, stride=stride, dtype=dtype,
                          quantize=quantize, min_confidence=min_confidence, resume=resume,
                          score_notes=score_notes, chunk_size=chunk_size, show=show)
    table = entity_table(summary.shown, limit=show) if show else ""
    if table:
        echo(table + "\n")
    resumed = f", {summary.resumed} of them by the interrupted run" if summary.resumed else ""
    echo(f"{counted(summary.spans, 'entity')} in {counted(summary.documents, 'document')} written to "
         f"{output} ({format}{resumed}); {counted(summary.documents - summary.resumed, 'document')} in "
         f"{summary.seconds:.1f} s ({summary.dtype})")
