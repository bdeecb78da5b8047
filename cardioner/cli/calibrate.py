"""``cardioner calibrate``: fit an export's confidence temperature on annotated dev data."""

from __future__ import annotations

from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import echo, nothing_written, on_interrupt, run_or_exit, setup_logging
from cardioner.cli.flags import CALIBRATE_FLAGS, speaking_flags
from cardioner.values import counted


def calibrate(
    model: Annotated[str, typer.Option(metavar="DIR",
                                       help="exported model folder (its config.json gets the temperature)")],
    data: Annotated[str, typer.Option(metavar="PATH", help="annotated dev corpus (never test)")],
    format: options.CorpusFormat = None,
    output: Annotated[str | None, typer.Option(metavar="FILE",
                                               help="also write the report as JSON here")] = None,
    batch_size: options.BatchSize = 32,
    span_errors: options.SpanErrors = "error",
    update_modeling: Annotated[bool, typer.Option(
        help="an export whose modeling.py predates confidence temperatures gets the installed one")] = False,
    verbose: options.Verbose = False,
) -> None:
    """Fit the temperature that makes span confidences mean what they say; spans do not change."""
    from cardioner.inference import calibrate_path  # when run (cli/__init__)

    setup_logging(verbose)
    on_interrupt(nothing_written(output))
    report = run_or_exit(speaking_flags(calibrate_path, CALIBRATE_FLAGS), model, data, format, output,
                         batch_size, span_errors, update_modeling)
    echo(f"confidence temperature {report['temperature']:.4f} (was {report['previous_temperature']:g}): "
         f"dev NLL per word {report['nll_before']:.4f} -> {report['nll_after']:.4f} over "
         f"{counted(report['words'], 'word')}")
    before, after = report["before"], report["after"]
    if before["ece"] is not None:
        echo(f"span confidences on {report['data']} ({counted(after['spans'], 'predicted span')}, "
             f"exact-match precision {after['accuracy']:.3f}), fitted and measured on the same documents:")
        for key, name in (("ece", "ECE"), ("mce", "MCE"), ("brier", "Brier score")):
            echo(f"  {name} {before[key]:.4f} -> {after[key]:.4f}")
    echo(f"written into {model}/config.json (confidence_temperature) and its fit into metrics.json")
