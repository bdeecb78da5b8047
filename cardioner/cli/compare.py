"""``cardioner compare``: train each head on the same data and
budget (or tabulate exports) and compare them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cardioner.cli.common import parse_sets, run_or_exit, setup_logging
from cardioner.cli.flags import COMPARE_FLAGS, speaking_flags
from cardioner.config import CHOICES, load_config


def compare(
    exports: Annotated[
        list[Path] | None,
        typer.Argument(help="with --compare-only: export folders (or folders " "of exports) to tabulate"),
    ] = None,
    heads: Annotated[str, typer.Option(help="comma-separated heads ('crf' = linear with a CRF)")] = ",".join(
        CHOICES["model.head"]
    ),
    crf: Annotated[
        str | None,
        typer.Option(
            help="CRF off, on, or both (each head twice); default: model.use_crf "
            "of the config / --set (off unless set)"
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="base YAML config (sections data/model/training)")
    ] = None,
    train: Annotated[str | None, typer.Option(help="training corpus")] = None,
    dev: Annotated[str | None, typer.Option(help="dev corpus: model selection and early stopping")] = None,
    test: Annotated[str | None, typer.Option(help="test corpus: the compared scores")] = None,
    format: Annotated[
        str | None, typer.Option(help="brat | conll | jsonl | hf | tsv (default: detect)")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="backbone name or path; 'default' = bundled MiniLM")
    ] = None,
    output: Annotated[
        str, typer.Option(help="folder for the exports and comparison.json/.md/.png")
    ] = "comparison",
    epochs: Annotated[int | None, typer.Option(help="maximum epochs (the same for every head)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="windows per batch")] = None,
    lr: Annotated[float | None, typer.Option(help="backbone learning rate")] = None,
    max_length: Annotated[
        int | None,
        typer.Option(help="window size in subwords (default: the backbone's limit, " "at most 512)"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (the same for every head)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="any config key: --set model.num_layers_to_use=3")
    ] = None,
    compare_only: Annotated[
        bool, typer.Option("--compare-only", help="tabulate existing exports; train nothing")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
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
        overrides = {
            "data.train": train,
            "data.dev": dev,
            "data.test": test,
            "data.format": format,
            "model.model": model,
            "training.epochs": epochs,
            "training.batch_size": batch_size,
            "training.lr": lr,
            "data.max_length": max_length,
            "training.seed": seed,
        }
        overrides.update(parse_sets(set_))
        resolved = run_or_exit(load_config, config, overrides)
        names = [name.strip() for name in heads.split(",") if name.strip()]
        result = run_or_exit(speaking_flags(compare_heads, COMPARE_FLAGS), resolved, names, crf, output)
    typer.echo(markdown_table(result["runs"]))
    typer.echo(json.dumps({"output": str(Path(output) / "comparison.json")}))
