"""``cardioner train``: parse options into a Config and call run_training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import echo, on_interrupt, parse_sets, run_or_exit, setup_logging
from cardioner.cli.flags import CONFIG_FLAGS, command_line_flags, config_overrides, speaking_flags
from cardioner.config import Config, load_config
from cardioner.values import counted


def train(
    context: typer.Context,
    config: options.ConfigFile = None,
    train: options.TrainCorpus = None,
    dev: options.DevCorpus = None,
    test: Annotated[str | None, typer.Option(metavar="PATH",
                                             help="test corpus: scored once after training")] = None,
    format: options.CorpusFormat = None,
    model: options.Backbone = None,
    output: Annotated[str | None, typer.Option(metavar="DIR",
                                               help="export folder (training.output); required unless "
                                                    "--no-export or --folds")] = None,
    no_export: Annotated[bool, typer.Option("--no-export", help="train and score without writing a model "
                                                                "(instead of --output)")] = False,
    crf: options.Crf = None,
    head: options.Head = None,
    multilabel: Annotated[bool | None, typer.Option("--multilabel/--no-multilabel", help=options.described(
        "data.multilabel", "one BIO channel per entity type (overlapping entities of different types)"))
    ] = None,
    epochs: options.Epochs = None,
    batch_size: options.TrainBatchSize = None,
    lr: options.LearningRate = None,
    max_length: options.MaxLength = None,
    stride: options.Stride = None,
    seed: options.Seed = None,
    resume: Annotated[bool | None, typer.Option("--resume/--no-resume", help=options.described(
        "training.resume", "resume from the last checkpoint in OUTPUT.checkpoints"))] = None,
    log_with: Annotated[str | None, typer.Option(metavar="TRACKER", help=options.described(
        "training.log_with", "experiment tracker (its files go to OUTPUT.logs)"))] = None,
    set_: options.Sets = None,
    folds: Annotated[int | None, typer.Option(metavar="K",
                                              help="K-fold cross-validation by document; each fold's dev set "
                                                   "is data.dev_fraction of its training documents (0.1 "
                                                   "when 0)")] = None,
    verbose: options.Verbose = False,
) -> None:
    """Train a model on annotated documents and export it as a model folder."""
    from cardioner.training import run_training  # when run (cli/__init__)
    from cardioner.training.trainer import tracker_folder

    setup_logging(verbose)
    overrides = config_overrides(context.params, CONFIG_FLAGS)
    overrides.update(parse_sets(set_))
    resolved = run_or_exit(command_line_flags(load_config, CONFIG_FLAGS), config, overrides)
    if no_export and resolved.training.output:
        raise typer.BadParameter(f"--no-export and an output ({resolved.training.output}) contradict each "
                                 "other: give one")
    if not resolved.training.output and not no_export and folds is None:
        raise typer.BadParameter("no --output: where should the model go? Give --output DIR (or "
                                 "training.output in the config), or --no-export to train and score only")
    on_interrupt(lambda: kept_after_interrupt(resolved, folds))
    for key in ("train", "dev", "test"):
        path = getattr(resolved.data, key)
        if path is not None and not Path(path).exists():
            typer.secho(f"error: --{key} {path}: no such file or folder", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
    if folds is not None:
        from cardioner.training.folds import run_cross_validation  # when run (cli/__init__)

        cv = run_or_exit(speaking_flags(run_cross_validation, CONFIG_FLAGS), resolved, folds)
        echo(
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
        echo(format_summary(cv))
        return
    result, path = run_or_exit(speaking_flags(run_training, CONFIG_FLAGS), resolved)
    summary = {
        "best_epoch": result.best_epoch,
        "dev_f1": (result.dev_metrics or {}).get("micro", {}).get("f1"),
        "test_f1": (result.test_metrics or {}).get("micro", {}).get("f1"),
        "train_samples_per_second": round(result.train_samples_per_second, 2),
        "output": str(path) if path else None,
    }
    if resolved.training.log_with:
        summary["logs"] = str(tracker_folder(resolved))
    echo(json.dumps(summary, indent=2))


def kept_after_interrupt(config: Config, folds: int | None) -> str:
    """What an interrupted ``train`` leaves, and how to go on (``on_interrupt``)."""
    from cardioner.training.checkpoints import Checkpoints  # when run (cli/__init__)

    output = config.training.output
    if folds is not None:
        return (f"cross-validation keeps nothing ({output or 'no output'}: no cv_results.json written); "
                "rerun the command to start it again")
    if not output:
        return "nothing was written (--no-export)"
    latest = Checkpoints(config).latest()
    if latest is None:
        return f"stopped before the first checkpoint: {output} was not written"
    return (f"{output} was not written; the last checkpoint is kept in {latest.parent}: rerun the same "
            "command with --resume to go on from it")


def format_summary(result: dict) -> str:
    """One line: mean ± std of test-fold span F1 and the bootstrap CI of the pooled F1 (and, for a multi-label
    sigmoid model, the options that train a final model with the folds' mean thresholds)."""
    ci = result["ci"]
    line = (
        f"span F1 over {counted(result['k'], 'test fold')}: {result['mean_f1']:.4f} ± {result['std_f1']:.4f}"
        f" (mean ± std); pooled {ci['f1']['value']:.4f}, {round(100 * ci['confidence'])}% CI"
        f" [{ci['f1']['low']:.4f}, {ci['f1']['high']:.4f}] ({counted(ci['num_documents'], 'document')},"
        f" {counted(ci['n'], 'resample')})"
    )
    if result.get("mean_thresholds"):
        given = ",".join(f"{t}={v:g}" for t, v in result["mean_thresholds"].items())
        line += (f"\nthresholds averaged over the folds: {given} (train a final model with them: "
                 f"--set model.type_thresholds={given} --set model.threshold_selection=fixed)")
    return line
