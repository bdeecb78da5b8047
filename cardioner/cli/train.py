"""``cardioner train``: parse options into a Config and call run_training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import parse_sets, run_or_exit, setup_logging
from cardioner.cli.flags import CONFIG_FLAGS, config_overrides, speaking_flags
from cardioner.config import load_config


def train(
    context: typer.Context,
    config: options.ConfigFile = None,
    train: options.TrainCorpus = None,
    dev: options.DevCorpus = None,
    test: Annotated[str | None, typer.Option(help="test corpus: scored once after training")] = None,
    format: options.CorpusFormat = None,
    model: options.Backbone = None,
    output: Annotated[str | None, typer.Option(help="export folder")] = None,
    crf: options.Crf = None,
    head: options.Head = None,
    multilabel: Annotated[bool | None, typer.Option("--multilabel/--no-multilabel",
                                                     help="overlapping entity types")] = None,
    epochs: options.Epochs = None,
    batch_size: options.TrainBatchSize = None,
    lr: options.LearningRate = None,
    max_length: options.MaxLength = None,
    stride: Annotated[int | None, typer.Option(help="window overlap in subwords (default: a quarter of the "
                                                    "window)")] = None,
    seed: options.Seed = None,
    resume: Annotated[bool | None, typer.Option("--resume/--no-resume",
                                                help="resume from the last checkpoint")] = None,
    log_with: Annotated[str | None, typer.Option(help="tensorboard | wandb | mlflow")] = None,
    set_: options.Sets = None,
    folds: Annotated[int | None, typer.Option(help="K-fold cross-validation by document")] = None,
    verbose: options.Verbose = False,
) -> None:
    """Train a model on annotated documents and export it as a model folder."""
    from cardioner.training import run_training  # when run (cli/__init__)

    setup_logging(verbose)
    overrides = config_overrides(context.params, CONFIG_FLAGS)
    overrides.update(parse_sets(set_))
    resolved = run_or_exit(load_config, config, overrides)
    for key in ("train", "dev", "test"):
        path = getattr(resolved.data, key)
        if path is not None and not Path(path).exists():
            typer.secho(f"error: --{key} {path}: no such file or folder", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
    if folds is not None:
        from cardioner.training.folds import run_cross_validation  # when run (cli/__init__)

        cv = run_or_exit(speaking_flags(run_cross_validation, CONFIG_FLAGS), resolved, folds)
        typer.echo(
            json.dumps(
                {
                    "folds": [{k: v for k, v in row.items() if k != "dev_scores"} for row in cv["folds"]],
                    "mean_f1": cv["mean_f1"],
                    "std_f1": cv["std_f1"],
                    "ci": cv["ci"],
                    "mean_thresholds": cv["mean_thresholds"],
                },
                indent=2,
            )
        )
        typer.echo(format_summary(cv))
        return
    result, path = run_or_exit(speaking_flags(run_training, CONFIG_FLAGS), resolved)
    summary = {
        "best_epoch": result.best_epoch,
        "dev_f1": (result.dev_metrics or {}).get("micro", {}).get("f1"),
        "test_f1": (result.test_metrics or {}).get("micro", {}).get("f1"),
        "train_samples_per_second": round(result.train_samples_per_second, 2),
        "output": str(path) if path else None,
    }
    typer.echo(json.dumps(summary, indent=2))


def format_summary(result: dict) -> str:
    """One line: mean ± std of test-fold span F1 and the bootstrap CI of the pooled F1 (and, for a multi-label
    sigmoid model, the options that train a final model with the folds' mean thresholds)."""
    ci = result["ci"]
    line = (
        f"span F1 over {result['k']} test folds: {result['mean_f1']:.4f} ± {result['std_f1']:.4f} (mean ±"
        f" std); pooled {ci['f1']['value']:.4f}, {round(100 * ci['confidence'])}% CI [{ci['f1']['low']:.4f},"
        f" {ci['f1']['high']:.4f}] ({ci['num_documents']} documents, {ci['n']} resamples)"
    )
    if result.get("mean_thresholds"):
        given = ",".join(f"{t}={v:g}" for t, v in result["mean_thresholds"].items())
        line += (f"\nthresholds averaged over the folds: {given} (train a final model with them: "
                 f"--set model.type_thresholds={given} --set model.threshold_selection=fixed)")
    return line
