"""``cardioner analyze``: span confusion, error examples and word plots of an exported model."""

from __future__ import annotations

from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import nothing_written, on_interrupt, run_or_exit, setup_logging
from cardioner.cli.flags import PREDICT_FLAGS, speaking_flags


def analyze(
    model: options.ModelDir,
    data: options.AnnotatedCorpus,
    output: Annotated[str | None, typer.Option(metavar="DIR",
                                               help="folder for the plots and JSON (default: MODEL.analysis, "
                                                               "beside the export)")
                      ] = None,
    format: options.CorpusFormat = None,
    batch_size: options.BatchSize = 32,
    max_words: Annotated[int, typer.Option(metavar="N", help="words in the PCA and t-SNE plots")] = 2000,
    max_examples: Annotated[int, typer.Option(metavar="N", help="examples per type and error kind")] = 20,
    seed: Annotated[int, typer.Option(metavar="N", help="seed of the word sample and t-SNE")] = 0,
    verbose: options.Verbose = False,
) -> None:
    """Span confusion matrix over types (PNG + JSON), per-type error examples, PCA and t-SNE of words."""
    from cardioner.analysis import analyze_model, default_output  # when run (cli/__init__)
    from cardioner.inference import check_batch_size

    setup_logging(verbose)
    on_interrupt(nothing_written(output or default_output(model)))
    run_or_exit(speaking_flags(check_batch_size, PREDICT_FLAGS), batch_size)
    paths = run_or_exit(speaking_flags(analyze_model, PREDICT_FLAGS), model, data, output, format, batch_size,
                        max_words, max_examples, seed)
    for path in paths.values():
        typer.echo(str(path))
