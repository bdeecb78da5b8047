"""``cardioner compare``: train each head on the same data and budget (or tabulate exports), compare them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import on_interrupt, parse_sets, run_or_exit, setup_logging
from cardioner.cli.flags import (
    COMPARE_CONFIG_FLAGS,
    COMPARE_FLAGS,
    command_line_flags,
    config_overrides,
    speaking_flags,
)
from cardioner.config import CHOICES, load_config


def compare(
    context: typer.Context,
    exports: Annotated[list[Path] | None, typer.Argument(metavar="EXPORT",
                                                         help="with --compare-only: export folders (or "
                                                              "folders of exports) to tabulate")] = None,
    heads: Annotated[str, typer.Option(metavar="HEADS",
                                       help="comma-separated heads ('crf' = linear with a CRF)")
                     ] = ",".join(CHOICES["model.head"]),
    crf: Annotated[str | None, typer.Option(metavar="MODE",
                                            help="CRF off, on, or both (each head twice); default: "
                                                 "model.use_crf of the config or --set (off)")] = None,
    config: options.ConfigFile = None,
    train: options.TrainCorpus = None,
    dev: options.DevCorpus = None,
    test: Annotated[str | None, typer.Option(metavar="PATH", help="test corpus: the compared scores")] = None,
    format: options.CorpusFormat = None,
    model: options.Backbone = None,
    output: Annotated[str, typer.Option(metavar="DIR",
                                        help="folder for the exports and comparison.json/.md/.png")
                      ] = "comparison",
    epochs: options.Epochs = None,
    batch_size: options.TrainBatchSize = None,
    lr: options.LearningRate = None,
    max_length: options.MaxLength = None,
    seed: options.Seed = None,
    set_: options.Sets = None,
    compare_only: Annotated[bool, typer.Option("--compare-only",
                                               help="tabulate existing exports; train nothing")] = False,
    verbose: options.Verbose = False,
) -> None:
    """Train every head on the same data, seed and budget, and write a table and a plot of how they do."""
    from cardioner.compare import compare_heads, markdown_table, tabulate_exports  # when run (cli/__init__)

    setup_logging(verbose)
    if compare_only:
        if not exports:
            raise typer.BadParameter(
                "--compare-only needs export folders: cardioner compare --compare-only DIR..."
            )
        result = run_or_exit(tabulate_exports, exports, output)
    else:
        if exports:
            raise typer.BadParameter(
                f"export folders {[str(e) for e in exports]} are only read with --compare-only"
            )
        overrides = config_overrides(context.params, COMPARE_CONFIG_FLAGS)
        overrides.update(parse_sets(set_))
        resolved = run_or_exit(command_line_flags(load_config, COMPARE_CONFIG_FLAGS), config, overrides)
        names = [name.strip() for name in heads.split(",") if name.strip()]
        on_interrupt(lambda: kept_after_interrupt(Path(output)))
        result = run_or_exit(speaking_flags(compare_heads, COMPARE_FLAGS), resolved, names, crf, output)
    typer.echo(markdown_table(result["runs"]))
    typer.echo(json.dumps({"output": str(Path(output) / "comparison.json")}))


def kept_after_interrupt(output: Path) -> str:
    """What an interrupted ``compare`` leaves (each finished run's export), and how to use it."""
    finished = sorted(folder.parent.name for folder in output.glob("*/metrics.json"))
    if not finished:
        return f"no run had finished: no export or table was written to {output}"
    return (f"the comparison table was not written; the finished runs are kept as exports in {output} "
            f"({', '.join(finished)}): cardioner compare --compare-only {output} --output {output}.table "
            "tabulates them (a rerun trains every head again)")
