"""``cardioner tune``: parse options and call cardioner.tuning.tune (Optuna) or tune_pbt (Ray Tune PBT)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import on_interrupt, parse_sets, run_or_exit, setup_logging
from cardioner.values import counted


def tune(
    config: Annotated[Path, typer.Option("--config", metavar="FILE",
                                                     help="base YAML config; an optional 'search:' section")],
    trials: Annotated[int, typer.Option(metavar="N",
                                        help="finished trials the study should reach (pbt: the population)")],
    storage: Annotated[str | None, typer.Option(metavar="URL", help="RDB URL to resume or share the study: "
                                                     "sqlite:///study.db")] = None,
    study_name: Annotated[str | None, typer.Option(metavar="NAME",
                                                   help="the study's name in the storage (default: "
                                                        "cardioner)")] = None,
    metric: Annotated[str | None, typer.Option(metavar="METRIC", help=options.described(
        "training.metric", "dev metric to maximise", default="the config's training.metric"))] = None,
    timeout: Annotated[float | None, typer.Option(metavar="SECONDS",
                                                  help="stop starting trials after SEC seconds")] = None,
    method: Annotated[str, typer.Option(metavar="METHOD",
                                        help="optuna (TPE + pruning) | pbt (Ray Tune population-based "
                                             "training)")] = "optuna",
    pruner: Annotated[str, typer.Option(metavar="PRUNER", help="median | hyperband | none")] = "median",
    folds: Annotated[int | None, typer.Option(metavar="K",
                                              help="cross-validate each trial on K folds (by document)")
                     ] = None,
    output: Annotated[Path, typer.Option(metavar="DIR",
                                         help="folder for best_config.yaml, trials.csv and plots")
                      ] = Path("tuning"),
    set_: options.Sets = None,
    verbose: options.Verbose = False,
) -> None:
    """Search hyperparameters (Optuna TPE with pruning, or PBT) and write the best config."""
    from cardioner import tuning  # when run (cli/__init__)
    from cardioner.data.paths import check_output_folder

    setup_logging(verbose)
    if method not in tuning.METHODS:
        raise typer.BadParameter(f"--method must be one of {', '.join(tuning.METHODS)}, got {method!r}")
    check_output_folder(output, ("best_config.yaml", "trials.csv", "pbt_members.csv"),
                        "an earlier tuning output")
    base, space = run_or_exit(tuning.load_tuning_config, config, parse_sets(set_))
    if method == "pbt":
        if folds:
            raise typer.BadParameter("--folds is not supported with --method pbt")
        try:  # a missing optional dependency is the user's to install, not a bug (the boundary would say one)
            result = tuning.tune_pbt(base, population=trials, output_dir=output, metric=metric,
                                     timeout=timeout)
        except tuning.RayUnavailableError as error:
            typer.secho(f"error: --method pbt: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        typer.echo(
            json.dumps(
                {"method": "pbt", "best_dev_score": result["best_score"], "best_epoch": result["best_epoch"],
                 "exploit_events": len(result["events"]), "model": str(result["model_dir"]),
                 "best_config": str(output / "best_config.yaml")},
                indent=2,
            )
        )
        return
    on_interrupt(lambda: kept_after_interrupt(output, storage, trials))
    study = run_or_exit(tuning.tune, base, trials, storage=storage, study_name=study_name, metric=metric,
                        timeout=timeout, search_space=space, output_dir=output, pruner=pruner, folds=folds)
    typer.echo(json.dumps(tuning.study_summary(study, trials, output), indent=2))


def kept_after_interrupt(output: Path, storage: str | None, trials: int) -> str:
    """What an interrupted ``tune`` leaves (the study's outputs are written whatever stops it), and how to go
    on (``on_interrupt``)."""
    finished = 0
    if (output / "trials.csv").is_file():
        with (output / "trials.csv").open(encoding="utf-8", newline="") as handle:
            finished = sum(row["state"] in ("COMPLETE", "PRUNED") for row in csv.DictReader(handle))
    kept = f"{counted(finished, 'finished trial')} written to {output / 'trials.csv'}"
    if storage is None:
        return (f"{kept}; the study was held in memory, so a rerun starts a new one (give --storage "
                "sqlite:///study.db to make a study resumable)")
    return (f"{kept}; the study is kept in {storage}: rerun the same command to go on to {trials} finished "
            "trials")
