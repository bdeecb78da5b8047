"""``cardioner evaluate``: score an exported model on an annotated corpus."""

from __future__ import annotations

from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import echo, nothing_written, on_interrupt, run_or_exit, setup_logging
from cardioner.cli.flags import PREDICT_FLAGS, speaking_flags
from cardioner.values import counted


def evaluate(
    model: options.ModelDir,
    data: options.AnnotatedCorpus,
    format: options.CorpusFormat = None,
    output: Annotated[str | None, typer.Option(metavar="FILE", help="write the scores as JSON here")] = None,
    html: Annotated[
        str | None, typer.Option(metavar="FILE", help="write a page of gold against predicted spans here")
    ] = None,
    reliability: Annotated[str | None, typer.Option(
        metavar="FILE", help="write the reliability diagram of the span confidences here (PNG)")] = None,
    batch_size: options.BatchSize = 32,
    span_errors: options.SpanErrors = "error",
    dtype: options.Dtype = "float32",
    quantize: options.Quantize = "none",
    verbose: options.Verbose = False,
) -> None:
    """Span-level precision, recall and F1 per type (exact and overlap match) and the seqeval view."""
    from cardioner.evaluation import format_table  # when run (cli/__init__)
    from cardioner.inference import evaluate_path

    setup_logging(verbose)
    on_interrupt(nothing_written(output, html))
    scores = run_or_exit(speaking_flags(evaluate_path, PREDICT_FLAGS), model, data, format, output,
                         batch_size, span_errors, html, reliability, dtype, quantize)
    echo(format_table(scores))
    micro, overlap = scores["micro"], scores["overlap"]["micro"]
    echo(f"\nexact match:   P {micro['precision']:.4f}  R {micro['recall']:.4f}  F1 {micro['f1']:.4f}")
    echo(
        f"overlap match: P {overlap['precision']:.4f}  R {overlap['recall']:.4f}  F1 {overlap['f1']:.4f}"
    )
    calibrated = scores["calibration"]
    if calibrated["ece"] is not None:
        echo(f"span confidences: ECE {calibrated['ece']:.4f} over "
             f"{counted(calibrated['spans'], 'predicted span')} (mean confidence "
             f"{calibrated['mean_confidence']:.3f}, exact-match precision {calibrated['accuracy']:.3f})")
    if "seqeval" in scores:
        echo(f"seqeval (strict IOB2, words): F1 {scores['seqeval']['micro']['f1']:.4f}")
