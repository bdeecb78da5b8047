"""Hyperparameter search with Optuna: TPE sampling, pruning over epochs, resumable and shared storage.

Every trial trains with the base config plus its sampled keys (``space.sample_config``), reports the dev
score each epoch to the pruner, and never sees the test corpus. With a storage URL (``sqlite:///study.db``,
or any SQLAlchemy RDB URL shared by several machines) the study resumes where it stopped and several worker
processes share it. Optuna is an optional dependency (the ``tune`` extra): it is imported where it is used.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import socket
import time
from pathlib import Path

from cardioner import processes
from cardioner.config import Config, ConfigError, absolute_paths, config_from_dict
from cardioner.data.common import atomic_path, write_text_atomic
from cardioner.data.document import Document
from cardioner.evaluation import selection_score
from cardioner.plots import save_figure

# modules, not their functions: what a trial runs is looked up when it runs (tests replace it)
from cardioner.training import batch_size
from cardioner.training import folds as cross_validation
from cardioner.training.folds import read_train_and_dev
from cardioner.training.run import check_before_reading
from cardioner.tuning.space import SearchParam, default_search_space, sample_config
from cardioner.values import counted

logger = logging.getLogger("cardioner")

PRUNERS = ("median", "hyperband", "none")
# the error of a trial that Ctrl-C stopped (a FAIL row in trials.csv; it does not count towards the trials)
INTERRUPTED = "interrupted (Ctrl-C)"
# A trial failing with these (a sampled combination the config or model refuses) is recorded as FAIL and the
# study goes on; anything else (out of memory after the batch fallback, a bug) still ends the study.
TRIAL_ERRORS = (ValueError, ConfigError)


def make_pruner(name: str, max_resource: int):
    """median: prune below the median of earlier trials at the same epoch (after 2 trials and 1 epoch);
    hyperband: successive halving over epochs; none: never prune."""
    import optuna  # optional (the tune extra), and slow to import

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(max_resource, 1), reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def open_storage(url: str | None):
    """An Optuna storage for ``url`` (None = in memory); RDB storages get a heartbeat so that trials of a
    killed worker are marked failed (and not waited for) by the next worker that starts a trial."""
    if url is None:
        return None
    if "://" not in url:
        raise ValueError(f"the study storage must be a database URL such as sqlite:///study.db, got {url!r}")
    import optuna  # optional (the tune extra), and slow to import
    from sqlalchemy.exc import IntegrityError, OperationalError  # comes with optuna

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=30,
                                              grace_period=120)
        except (IntegrityError, OperationalError):
            # Workers started together race to create the schema; the loser finds it made on a retry.
            if attempt == 5:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


class EpochReporter:
    """Reports a trial's dev score after each epoch to Optuna, and prunes it when the pruner says so.

    The step is the (fold, epoch) itself, so that the pruner compares the same point of every trial; a run
    restarted after an out-of-memory retry reports the same steps again (Optuna keeps the first).

    Args:
        trial: the Optuna trial.
        epochs: epochs per training run (``training.epochs``).
        metric: the dev metric (``training.metric`` choices).
        cross_validated: whether the trial trains one model per fold.
    """

    def __init__(self, trial, epochs: int, metric: str, cross_validated: bool) -> None:
        self.trial = trial
        self.epochs = epochs
        self.metric = metric
        self.cross_validated = cross_validated
        self.reported: set[int] = set()

    def __call__(self, row: dict, fold: int = 0) -> None:
        import optuna  # optional (the tune extra), and slow to import

        if "dev_scores" not in row:
            return
        step = fold * self.epochs + row["epoch"] - 1
        if step not in self.reported:
            self.trial.report(selection_score(row["dev_scores"], self.metric), step)
            self.reported.add(step)
        self.trial.set_user_attr("last_epoch", row["epoch"])
        if self.cross_validated:
            self.trial.set_user_attr("last_fold", fold + 1)
        if self.trial.should_prune():
            where = f"epoch {row['epoch']}" + (f" of fold {fold + 1}" if self.cross_validated else "")
            raise optuna.TrialPruned(f"pruned at {where}")

    def after_fold_epoch(self, fold: int, row: dict) -> None:
        """``cross_validate``'s callback: (fold, epoch row)."""
        self(row, fold)


class Objective:
    """One Optuna trial: the base config with the trial's sampled keys, trained on train and scored on dev
    (or cross-validated: the mean dev score over folds). A configuration the trial sampled that the config or
    the model refuses fails that trial only (``TRIAL_ERRORS``), with the error in its attributes.

    Args:
        space: the search space.
        base: the config every trial starts from (no output, no resume).
        metric: the dev metric to maximise.
        train_docs, dev_docs: the documents (dev None with folds).
        num_folds: cross-validate on this many folds, or None.
    """

    def __init__(self, space: list[SearchParam], base: Config, metric: str, train_docs: list[Document],
                 dev_docs: list[Document] | None, num_folds: int | None) -> None:
        self.space = space
        self.base = base
        self.metric = metric
        self.train_docs = train_docs
        self.dev_docs = dev_docs
        self.num_folds = num_folds

    def __call__(self, trial) -> float:
        try:
            return self.run(trial)
        except KeyboardInterrupt:  # Optuna records the trial as FAIL; its row says why
            trial.set_user_attr("error", INTERRUPTED)
            raise
        # a configuration this trial sampled is refused: a FAIL row, not the end
        except TRIAL_ERRORS as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise

    def run(self, trial) -> float:
        config = sample_config(trial, self.space, self.base)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        reporter = EpochReporter(trial, config.training.epochs, self.metric, bool(self.num_folds))
        if self.num_folds:
            result = cross_validation.cross_validate(config, self.train_docs, self.num_folds,
                                                     on_epoch_end=reporter.after_fold_epoch)
            trial.set_user_attr("config", config.to_dict())
            trial.set_user_attr("cv_test_mean_f1", result["mean_f1"])  # reported, never optimised
            return (
                sum(selection_score(row["dev_scores"], self.metric) for row in result["folds"])
                / self.num_folds
            )
        trainer, result = batch_size.train_with_batch_fallback(config, self.train_docs, self.dev_docs, None,
                                                               on_epoch_end=reporter)
        trial.set_user_attr("config", trainer.config.to_dict())  # the batch size that ran
        trial.set_user_attr("best_epoch", result.best_epoch)
        return selection_score(result.dev_metrics, self.metric)


def tune(
    base_config: Config,
    trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    metric: str | None = None,
    timeout: float | None = None,
    search_space: list[SearchParam] | None = None,
    output_dir: str | Path = "tuning",
    pruner: str = "median",
    folds: int | None = None,
    train_docs: list[Document] | None = None,
    dev_docs: list[Document] | None = None,
):
    """Run (or resume, or join) an Optuna TPE study and write its outputs.

    Args:
        base_config: the config every trial starts from (its data section names the corpora).
        trials: the study's target number of finished (complete or pruned) trials, over every worker and
            every run: a resumed study only runs what is missing.
        storage: an RDB URL (``sqlite:///study.db``) to resume and share the study; None = in memory.
        study_name: the study's name in the storage (default "cardioner").
        metric: the dev metric to maximise (``training.metric`` choices); None = the base config's
        training.metric. timeout: stop starting new trials after this many seconds (this worker).
        search_space: the parameters; None = ``default_search_space(base_config)``. output_dir: where
        best_config.yaml, trials.csv and the plots go. pruner: median | hyperband | none. folds:
        cross-validate each trial on K folds (objective: mean dev score over folds). train_docs, dev_docs:
        documents to use instead of reading the config's corpora.

    Returns:
        the optuna Study.
    """
    processes.refuse_several("tuning")
    import optuna  # optional (the tune extra), and slow to import

    if trials < 1:
        raise ValueError(f"the number of trials must be >= 1, got {trials}")
    if folds is not None and folds < 2:
        raise ValueError(f"the number of folds must be >= 2, got {folds}")
    metric = metric or base_config.training.metric
    base_config = base_config.replace(**{"training.metric": metric})
    space = search_space if search_space is not None else default_search_space(base_config)
    if train_docs is None:
        check_before_reading(base_config)
        train_docs, dev_docs = read_train_and_dev(base_config, pooled=bool(folds))
    elif dev_docs is None and not folds:
        raise ValueError("tune(): dev_docs are required unless folds are used")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    trial_config = base_config.replace(**{"training.output": None, "training.resume": False})
    steps_per_trial = base_config.training.epochs * (folds or 1)
    study = optuna.create_study(
        storage=open_storage(storage), study_name=study_name or "cardioner", direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=_sampler_seed(base_config.training.seed, storage)),
        pruner=make_pruner(pruner, steps_per_trial), load_if_exists=True,
    )
    finished = _finished(study)
    logger.info("study %r: %d of %s finished; %s searched: %s", study.study_name, len(finished),
                counted(trials, "trial"), counted(len(space), "parameter"), ", ".join(p.key for p in space))
    objective = Objective(space, trial_config, metric, train_docs, dev_docs, folds)
    remaining = trials - len(finished)
    try:
        if remaining > 0:
            study.optimize(
                objective, n_trials=remaining, timeout=timeout, gc_after_trial=True, catch=TRIAL_ERRORS,
                callbacks=[optuna.study.MaxTrialsCallback(trials, states=_finished_states())],
            )
        else:
            logger.info(
                "study %r already has %s: nothing to run", study.study_name,
                counted(len(finished), "finished trial")
            )
    finally:  # whatever stopped the study (an error, Ctrl-C), the trials that finished are written
        write_study_outputs(study, base_config, output_dir)
    return study


def study_summary(study, trials: int, output_dir: str | Path) -> dict:
    """What a study holds, as ``cardioner tune`` prints it: ``trials`` counts the finished (complete or
    pruned) trials, the number ``trials`` asks for; failed and interrupted ones are counted apart."""
    states = [trial.state.name for trial in study.trials]
    interrupted = sum(trial.user_attrs.get("error") == INTERRUPTED for trial in study.trials)
    summary = {"study": study.study_name, "trials": states.count("COMPLETE") + states.count("PRUNED"),
               "target": trials, "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
               "failed": states.count("FAIL") - interrupted, "interrupted": interrupted,
               "output": str(output_dir)}
    best_config = Path(output_dir) / "best_config.yaml"
    if best_config.exists():
        summary.update(best_trial=study.best_trial.number, best_dev_score=study.best_value,
                       best_params=study.best_params, best_config=str(best_config))
    return summary


def _sampler_seed(seed: int, storage: str | None) -> int | None:
    """Seeded in memory (a study is reproducible); unseeded with a storage, so resumed runs and parallel
    workers do not replay the same random start-up points."""
    return seed if storage is None else None


def _finished_states() -> tuple:
    import optuna  # optional (the tune extra), and slow to import

    return (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _finished(study) -> list:
    return study.get_trials(deepcopy=False, states=_finished_states())


def write_study_outputs(study, base_config: Config, output_dir: str | Path) -> dict[str, Path]:
    """Write best_config.yaml, trials.csv and the history/importance plots; return what was written."""
    import optuna  # optional (the tune extra), and slow to import

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {"trials": _write_trials_csv(study, output_dir / "trials.csv")}
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        best_config = config_from_dict(best.user_attrs["config"])
        best_config = best_config.replace(**{"training.output": str(output_dir / "best_model")})
        best_config = absolute_paths(best_config)  # the reproduce line runs from this folder, or any other
        header = (
            f"# best trial {best.number} of study {study.study_name!r}: dev {best_config.training.metric} "
            f"{best.value:.6f}\n# reproduce (from any folder; the paths are absolute): "
            f"cardioner train --config {(output_dir / 'best_config.yaml').absolute()}\n"
        )
        written["best_config"] = write_text_atomic(
            output_dir / "best_config.yaml", header + best_config.to_yaml()
        )
        write_text_atomic(output_dir / "best_trial.json", json.dumps(
            {"number": best.number, "value": best.value, "params": best.params,
             "study": study.study_name, "finished_trials": len(_finished(study))}, indent=2))
    else:
        logger.warning("no trial completed: no best_config.yaml written")
    written.update(_write_plots(study, output_dir, len(complete)))
    return written


def _write_trials_csv(study, path: Path) -> Path:
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for trial in trials for name in trial.params})
    with atomic_path(path) as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "value", "last_step", "last_fold", "last_epoch", "duration_s",
                         "datetime_start", "error", *param_names])
        for trial in trials:
            duration = trial.duration.total_seconds() if trial.duration is not None else ""
            last_step = trial.last_step if trial.last_step is not None else ""
            started = trial.datetime_start.isoformat() if trial.datetime_start else ""
            attrs = trial.user_attrs
            writer.writerow(
                [
                    trial.number,
                    trial.state.name,
                    "" if trial.value is None else trial.value,
                    last_step,
                    attrs.get("last_fold", ""),
                    attrs.get("last_epoch", ""),
                    duration,
                    started,
                    attrs.get("error", ""),
                    *[trial.params.get(name, "") for name in param_names],
                ]
            )
    return path


def _write_plots(study, output_dir: Path, num_complete: int) -> dict[str, Path]:
    """Optuna's history and intermediate-values plots, and parameter importances (>= 2 complete trials)."""
    import optuna.visualization.matplotlib as optuna_plots  # optional (the tune extra), and slow to import

    figures = {"history": ("optimization_history.png", optuna_plots.plot_optimization_history),
               "intermediate": ("intermediate_values.png", optuna_plots.plot_intermediate_values)}
    if num_complete >= 2:
        figures["importance"] = ("param_importances.png", optuna_plots.plot_param_importances)
    else:
        logger.info("parameter importances need >= 2 complete trials (have %d): plot skipped", num_complete)
    written = {}
    for name, (filename, plot) in figures.items():
        try:
            axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # e.g. one value only: no importances
            logger.warning("%s plot skipped: %s", name, error)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        written[name] = save_figure(figure, output_dir / filename)
    return written
