"""Hyperparameter search over the training config: Optuna (TPE, pruning, resumable storage) and PBT on Ray Tune.

A search space maps dotted config keys onto distributions. It comes from the ``search:`` section of the
config file, or from ``default_search_space`` (per head)::

    search:
      training.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      training.batch_size: [8, 16, 32]                  # a list is a categorical choice
      model.use_crf: [false, true]
      model.classifier_hidden_layers: {type: categorical, choices: ["256", "512,256"], when: {model.head: mlp}}

``when`` makes a parameter conditional on other keys (sampled earlier or fixed in the base config). Every
trial trains with the base config plus its sampled keys, reports the dev score each epoch to the pruner, and
never sees the test corpus. With a storage URL (``sqlite:///study.db``, or any SQLAlchemy RDB URL shared by
several machines) the study resumes where it stopped and several worker processes share it.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardioner.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    read_config_file,
    resolve_key,
)
from cardioner.data.common import atomic_path, write_text_atomic
from cardioner.data.document import Document

logger = logging.getLogger("cardioner")

SEARCH_SECTION = "search"
METHODS = ("optuna", "pbt")
PRUNERS = ("median", "hyperband", "none")
PARAM_TYPES = ("float", "int", "categorical")
# A trial failing with these (a sampled combination the config or model refuses) is recorded as FAIL and the
# study goes on; anything else (out of memory after the batch fallback, a bug) still ends the study.
TRIAL_ERRORS = (ValueError, ConfigError)


@dataclass(frozen=True)
class SearchParam:
    """One searched config key and its distribution."""

    key: str  # dotted config key, e.g. "training.lr"
    type: str  # float | int | categorical
    low: float | None = None  # float/int: lower bound (inclusive)
    high: float | None = None  # float/int: upper bound (inclusive)
    log: bool = False  # float/int: sample on a log scale
    step: float | None = None  # float/int: grid step (None = continuous / 1 for int)
    choices: tuple = ()  # categorical: the values (None, bool, int, float or str; "512,256" for a tuple)
    when: tuple[tuple[str, Any], ...] = ()  # only sampled when every (key, value) holds

    def suggest(self, trial) -> Any:
        """Sample this parameter in an Optuna trial (the parameter's name is its dotted key)."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.key, list(self.choices))


def parse_search_space(raw: dict, source: str = "search") -> list[SearchParam]:
    """Read a ``search:`` mapping (dotted or short config keys -> distribution) into SearchParams.

    Args:
        raw: ``{key: [choices] | {"type", "low", "high", "log", "step", "choices", "when"}}``.
        source: where it came from, for error messages (e.g. the file name).

    Returns:
        the parameters in declaration order (conditions may refer to earlier keys).
    """
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: '{SEARCH_SECTION}' must be a non-empty mapping of config keys, got {raw!r}")
    space = []
    for raw_key, spec in raw.items():
        key = resolve_key(str(raw_key), source)
        if isinstance(spec, list):
            spec = {"type": "categorical", "choices": spec}
        if not isinstance(spec, dict):
            raise ConfigError(f"{source}: {SEARCH_SECTION}.{raw_key} must be a list of choices or a mapping, got {spec!r}")
        unknown = set(spec) - {"type", "low", "high", "log", "step", "choices", "when"}
        if unknown:
            raise ConfigError(f"{source}: {SEARCH_SECTION}.{raw_key}: unknown field(s) {sorted(unknown)}")
        kind = spec.get("type", "categorical" if "choices" in spec else "float")
        if kind not in PARAM_TYPES:
            raise ConfigError(f"{source}: {SEARCH_SECTION}.{raw_key}.type must be one of {PARAM_TYPES}, got {kind!r}")
        when = tuple(_when_value(resolve_key(str(k), source), v, f"{source}: {SEARCH_SECTION}.{raw_key}.when")
                     for k, v in (spec.get("when") or {}).items())
        if kind == "categorical":
            choices = tuple(_choice(c) for c in spec.get("choices") or ())
            if not choices:
                raise ConfigError(f"{source}: {SEARCH_SECTION}.{raw_key} needs at least one choice")
            space.append(SearchParam(key, kind, choices=choices, when=when))
            continue
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{source}: {SEARCH_SECTION}.{raw_key} needs numeric low and high, got {spec!r}") from None
        if low > high or (spec.get("log") and low <= 0):
            raise ConfigError(f"{source}: {SEARCH_SECTION}.{raw_key}: bad range [{low}, {high}] (log needs low > 0)")
        step = float(spec["step"]) if spec.get("step") is not None else None
        space.append(SearchParam(key, kind, low, high, bool(spec.get("log", False)), step, when=when))
    return space


def _when_value(key: str, value: Any, source: str) -> tuple[str, Any]:
    """A ``when`` condition with its value in the key's config type (YAML [512, 256] or "512,256" -> (512, 256),
    "true" -> True), as the config itself would read it; a value the key cannot take is a ConfigError."""
    import typing

    from cardioner.config import SECTIONS, _coerce

    section, name = key.split(".")
    return key, _coerce(value, typing.get_type_hints(SECTIONS[section])[name], key, source)


def _choice(value: Any) -> Any:
    """Optuna stores None/bool/int/float/str; a list (hidden layer sizes) becomes "512,256"."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def default_search_space(config: Config) -> list[SearchParam]:
    """The default space for the config's head: learning rates, regularisation, warm-up, batch, CRF, head."""
    space = {
        "training.lr": {"type": "float", "low": 1e-5, "high": 2e-4, "log": True},
        "training.head_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "training.weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
        "model.classifier_dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "training.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
        "training.batch_size": [8, 16, 32],
        "model.use_crf": [False, True],
        "training.crf_lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "when": {"model.use_crf": True}},
    }
    if config.model.use_crf or config.model.label_smoothing or config.model.focal_gamma:
        # A config that fixes a CRF keeps it; softmax-only losses (label smoothing, focal) refuse a CRF.
        del space["model.use_crf"]
        if not config.model.use_crf:
            del space["training.crf_lr"]
    if config.model.head == "mlp":
        space["model.classifier_hidden_layers"] = ["256", "512,256", "256,128"]
        space["model.classifier_activation"] = ["gelu", "relu", "tanh"]
    return parse_search_space(space, f"default search space ({config.model.head} head)")


def load_tuning_config(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[Config, list[SearchParam] | None]:
    """Read a config file that may hold a ``search:`` section; return (base Config, search space or None)."""
    path = Path(path)
    raw = read_config_file(path)
    search = raw.pop(SEARCH_SECTION, None)
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key in ("data", "model", "training"):
            flat.update({f"{key}.{name}": inner for name, inner in value.items()})
        else:
            flat[key] = value
    config = apply_overrides(apply_overrides(Config(), flat, str(path)), overrides or {}, skip_none=True)
    return config, (parse_search_space(search, str(path)) if search is not None else None)


def sample_config(trial, space: list[SearchParam], base: Config) -> Config:
    """The base config with this trial's sampled keys (conditional keys only where their ``when`` holds)."""
    values: dict[str, Any] = {}
    for param in space:
        current = base.replace(**values) if values else base
        if all(_get(current, key) == want for key, want in param.when):
            values[param.key] = param.suggest(trial)
    return base.replace(**values) if values else base


def _get(config: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def dev_score(scores: dict, metric: str) -> float:
    """The selection score of a span-score dict (``training.metric``: f1, precision, recall, overlap_f1, macro_f1)."""
    from cardioner.training.trainer import _selection_score

    return float(_selection_score(scores, metric))


# ---------------------------------------------------------------------------------------------------- Optuna
def make_pruner(name: str, max_resource: int):
    """median: prune below the median of earlier trials at the same epoch (after 2 trials and 1 epoch);
    hyperband: successive halving over epochs; none: never prune."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_resource, 1), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def open_storage(url: str | None):
    """An Optuna storage for ``url`` (None = in memory); RDB storages get a heartbeat so that trials of a
    killed worker are marked failed (and not waited for) by the next worker that starts a trial."""
    if url is None:
        return None
    import optuna

    if "://" not in url:
        raise ValueError(f"--storage must be a database URL such as sqlite:///study.db, got {url!r}")
    import random
    import time

    from sqlalchemy.exc import IntegrityError, OperationalError

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


def read_tuning_data(config: Config, folds: int | None) -> tuple[list[Document], list[Document] | None]:
    """Train and dev documents for the trials; the test corpus is never read by a search."""
    from cardioner.training.run import read_split, split_dev

    if not config.data.train:
        raise ValueError("no training corpus: set data.train in the config file")
    train = read_split(config.data.train, config, "train")
    dev = read_split(config.data.dev, config, "dev")
    if folds:
        from cardioner.training.folds import pool_documents

        return pool_documents(train, dev), None  # folds carve their own dev sets
    if dev is None:
        if config.data.dev_fraction <= 0:
            raise ValueError("tuning needs a dev set: set data.dev or data.dev_fraction > 0 (or use --folds)")
        train, dev = split_dev(train, config.data.dev_fraction, config.training.seed)
    return train, dev


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
        metric: the dev metric to maximise (``training.metric`` choices); None = the base config's training.metric.
        timeout: stop starting new trials after this many seconds (this worker).
        search_space: the parameters; None = ``default_search_space(base_config)``.
        output_dir: where best_config.yaml, trials.csv and the plots go.
        pruner: median | hyperband | none.
        folds: cross-validate each trial on K folds (objective: mean dev score over folds).
        train_docs, dev_docs: documents to use instead of reading the config's corpora.

    Returns:
        the optuna Study.
    """
    import optuna

    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    if folds is not None and folds < 2:
        raise ValueError(f"--folds must be >= 2, got {folds}")
    metric = metric or base_config.training.metric
    base_config = base_config.replace(**{"training.metric": metric})
    space = search_space if search_space is not None else default_search_space(base_config)
    if train_docs is None:
        from cardioner.training.run import check_before_reading

        check_before_reading(base_config)
        train_docs, dev_docs = read_tuning_data(base_config, folds)
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
    logger.info("study %r: %d finished trial(s) of %d; %d parameter(s) searched: %s", study.study_name,
                len(finished), trials, len(space), ", ".join(p.key for p in space))

    def objective(trial) -> float:
        config = sample_config(trial, space, trial_config)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        reported: set[int] = set()

        def report(row: dict, fold: int = 0) -> None:
            if "dev_scores" not in row:
                return
            # The step is the (fold, epoch) itself, so that the pruner compares the same point of every trial;
            # a run restarted after an out-of-memory retry reports the same steps again (Optuna keeps the first).
            step = fold * config.training.epochs + row["epoch"] - 1
            if step not in reported:
                trial.report(dev_score(row["dev_scores"], metric), step)
                reported.add(step)
            trial.set_user_attr("last_epoch", row["epoch"])
            if folds:
                trial.set_user_attr("last_fold", fold + 1)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {row['epoch']}" + (f" of fold {fold + 1}" if folds else ""))

        if folds:
            from cardioner.training.folds import cross_validate

            result = cross_validate(config, train_docs, folds, on_epoch_end=lambda fold, row: report(row, fold))
            trial.set_user_attr("config", config.to_dict())
            trial.set_user_attr("cv_test_mean_f1", result["mean_f1"])  # reported, never optimised
            return sum(dev_score(row["dev_scores"], metric) for row in result["folds"]) / folds
        from cardioner.training.batch_size import train_with_batch_fallback

        trainer, result = train_with_batch_fallback(config, train_docs, dev_docs, None, on_epoch_end=report)
        trial.set_user_attr("config", trainer.config.to_dict())  # the batch size that ran
        trial.set_user_attr("best_epoch", result.best_epoch)
        return dev_score(result.dev_metrics, metric)

    def guarded(trial) -> float:
        try:
            return objective(trial)
        except TRIAL_ERRORS as error:  # a configuration this trial sampled is refused: a FAIL row, not the end
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise

    remaining = trials - len(finished)
    try:
        if remaining > 0:
            study.optimize(
                guarded, n_trials=remaining, timeout=timeout, gc_after_trial=True, catch=TRIAL_ERRORS,
                callbacks=[optuna.study.MaxTrialsCallback(trials, states=_finished_states())],
            )
        else:
            logger.info("study %r already has %d finished trials: nothing to run", study.study_name, len(finished))
    finally:  # whatever stopped the study (an error, Ctrl-C), the trials that finished are written
        write_study_outputs(study, base_config, output_dir)
    return study


def _sampler_seed(seed: int, storage: str | None) -> int | None:
    """Seeded in memory (a study is reproducible); unseeded with a storage, so resumed runs and parallel
    workers do not replay the same random start-up points."""
    return seed if storage is None else None


def _finished_states() -> tuple:
    import optuna

    return (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _finished(study) -> list:
    return study.get_trials(deepcopy=False, states=_finished_states())


def write_study_outputs(study, base_config: Config, output_dir: str | Path) -> dict[str, Path]:
    """Write best_config.yaml, trials.csv and the history/importance plots; return what was written."""
    import optuna

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {"trials": _write_trials_csv(study, output_dir / "trials.csv")}
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        best_config = config_from_dict(best.user_attrs["config"])
        best_config = best_config.replace(**{"training.output": str(output_dir / "best_model")})
        header = (f"# best trial {best.number} of study {study.study_name!r}: dev {best_config.training.metric} "
                  f"{best.value:.6f}\n# reproduce: cardioner train --config best_config.yaml\n")
        written["best_config"] = write_text_atomic(output_dir / "best_config.yaml", header + best_config.to_yaml())
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
            writer.writerow([trial.number, trial.state.name, "" if trial.value is None else trial.value, last_step,
                             attrs.get("last_fold", ""), attrs.get("last_epoch", ""), duration, started,
                             attrs.get("error", ""), *[trial.params.get(name, "") for name in param_names]])
    return path


def _write_plots(study, output_dir: Path, num_complete: int) -> dict[str, Path]:
    """Optuna's history and intermediate-values plots, and parameter importances (>= 2 complete trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as optuna_plots

    plots = {"history": ("optimization_history.png", optuna_plots.plot_optimization_history),
             "intermediate": ("intermediate_values.png", optuna_plots.plot_intermediate_values)}
    if num_complete >= 2:
        plots["importance"] = ("param_importances.png", optuna_plots.plot_param_importances)
    else:
        logger.info("parameter importances need >= 2 complete trials (have %d): plot skipped", num_complete)
    written = {}
    for name, (filename, plot) in plots.items():
        try:
            axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # e.g. one value only: no importances
            logger.warning("%s plot skipped: %s", name, error)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.tight_layout()
        figure.savefig(output_dir / filename, dpi=120)
        plt.close(figure)
        written[name] = output_dir / filename
    return written


# ---------------------------------------------------------------------------------------------------- PBT
PBT_POPULATION = 4
PBT_QUANTILE = 0.2  # the bottom 20% copy a top-20% member's weights (exploit), then perturb (explore)
PBT_FACTORS = (1.2, 0.8)  # explore: each mutated value is multiplied by 1.2 or 0.8
PBT_KEYS = {  # mutated keys -> (initial range around the base value, valid range)
    "training.lr": ((1 / 3, 3.0), (1e-8, 1.0)),
    "training.weight_decay": ((0.5, 2.0), (0.0, 1.0)),
    "model.classifier_dropout": ((0.5, 1.5), (0.0, 0.9)),
    "training.warmup_ratio": ((0.5, 1.5), (0.0, 0.5)),
}


class RayUnavailableError(RuntimeError):
    """Ray Tune is not installed (``pip install 'cardioner[ray]'``) or cannot run on this platform."""


def _import_ray():
    try:
        import ray
        from ray import tune as ray_tune
        from ray.tune.schedulers import PopulationBasedTraining
    except Exception as error:  # ImportError, or a platform without Ray wheels failing at import
        raise RayUnavailableError(
            f"--method pbt needs Ray Tune, which is not available here ({type(error).__name__}: {error}); "
            "install it with: pip install 'cardioner[ray]'"
        ) from None
    return ray, ray_tune, PopulationBasedTraining


def _clip(key: str, value: float) -> float:
    low, high = PBT_KEYS[key][1]
    return min(max(float(value), low), high)


def _initial_distribution(ray_tune, key: str, base_value: float):
    """Members start spread around the base value (log-uniform for lr; 0 spreads to 0.1 of the valid range)."""
    (low, high), (_, limit) = PBT_KEYS[key]
    if key == "training.lr":
        return ray_tune.loguniform(base_value * low, base_value * high)
    if base_value <= 0:
        return ray_tune.uniform(0.0, 0.1 * limit)
    return ray_tune.uniform(_clip(key, base_value * low), _clip(key, base_value * high))


def _pbt_member(space: dict, base: dict, train_docs: list[Document], dev_docs: list[Document], metric: str) -> None:
    """One PBT member (a Ray Tune function trainable): one report per epoch, with its weights as checkpoint.

    After an exploit, Ray restarts it with the donor's checkpoint and the perturbed values: training goes on
    from the donor's weights and epoch with a fresh optimiser and schedule over the remaining epochs.
    """
    import torch
    from ray import tune as ray_tune
    from safetensors.torch import save_model as save_safetensors_model

    from cardioner.training.trainer import ModelTrainer

    torch.set_num_threads(1)
    config = config_from_dict(base).replace(**{key: _clip(key, space[key]) for key in PBT_KEYS})
    total_epochs, start_epoch, init_weights = config.training.epochs, 0, None
    work_dir = Path(tempfile.mkdtemp(prefix="cardioner-pbt-"))
    checkpoint = ray_tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start_epoch = json.loads((Path(folder) / "member.json").read_text(encoding="utf-8"))["epoch"]
            init_weights = work_dir / "init.safetensors"
            shutil.copy(Path(folder) / "model.safetensors", init_weights)
    if start_epoch >= total_epochs:
        return
    config = config.replace(**{"training.epochs": total_epochs - start_epoch, "training.patience": 0})
    trainer: ModelTrainer | None = None

    def report(row: dict) -> None:
        epoch = start_epoch + row["epoch"]
        folder = Path(tempfile.mkdtemp(prefix=f"epoch{epoch}-", dir=work_dir))
        save_safetensors_model(trainer.model, str(folder / "model.safetensors"))
        member_config = config.replace(**{"training.epochs": total_epochs})
        (folder / "member.json").write_text(json.dumps({"epoch": epoch, "config": member_config.to_dict()}),
                                            encoding="utf-8")
        score = dev_score(row["dev_scores"], metric)
        ray_tune.report({"score": score, "dev_f1": row["dev_f1"], "epoch": epoch, "train_loss": row["train_loss"],
                         **{key: _get(config, key) for key in PBT_KEYS}},
                        checkpoint=ray_tune.Checkpoint.from_directory(str(folder)))

    trainer = ModelTrainer(config, on_epoch_end=report, init_weights=init_weights)
    trainer.train(train_docs, dev_docs)


def tune_pbt(
    base_config: Config,
    population: int = PBT_POPULATION,
    output_dir: str | Path = "tuning",
    metric: str | None = None,
    timeout: float | None = None,
    train_docs: list[Document] | None = None,
    dev_docs: list[Document] | None = None,
    test_docs: list[Document] | None = None,
    num_cpus: int | None = None,
) -> dict:
    """Population-based training on Ray Tune (``PopulationBasedTraining``), one perturbation per epoch.

    Every member trains ``training.epochs`` epochs; after each epoch the bottom 20% load the weights of a
    top-20% member (exploit) and multiply lr, weight decay, dropout and warm-up by 0.8 or 1.2 (explore).
    The best member (best dev score at any epoch) is exported as a normal model folder.

    Args:
        base_config: the starting config; members start from values spread around its lr/wd/dropout/warm-up.
        population: number of members.
        output_dir: gets best_model/ (the export), best_config.yaml, pbt_members.csv, pbt_events.txt.
        metric: the dev metric to maximise; None = the base config's training.metric.
        timeout: wall-clock budget in seconds.
        train_docs, dev_docs, test_docs: documents instead of the config's corpora (test: scored once, at export).
        num_cpus: CPUs Ray may use (default: all).

    Returns:
        {"best_score", "best_config", "model_dir", "events": [exploit lines], "members": [...]}.
    """
    ray, ray_tune, PopulationBasedTraining = _import_ray()
    if population < 2:
        raise ValueError(f"population-based training needs a population of at least 2, got {population}")
    metric = metric or base_config.training.metric
    base_config = base_config.replace(**{"training.metric": metric, "training.output": None,
                                         "training.resume": False, "training.patience": 0})
    output_dir = Path(output_dir).resolve()
    if train_docs is None:
        from cardioner.training.run import check_before_reading, read_split

        check_before_reading(base_config, [output_dir / "best_model"])
        train_docs, dev_docs = read_tuning_data(base_config, None)
        test_docs = read_split(base_config.data.test, base_config, "test")
    output_dir.mkdir(parents=True, exist_ok=True)
    initial = {key: _initial_distribution(ray_tune, key, _get(base_config, key)) for key in PBT_KEYS}
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration", metric="score", mode="max", perturbation_interval=1,
        hyperparam_mutations=initial, quantile_fraction=PBT_QUANTILE, resample_probability=0.0,
        perturbation_factors=PBT_FACTORS, log_config=True,
    )
    trainable = ray_tune.with_parameters(_pbt_member, base=base_config.to_dict(), train_docs=train_docs,
                                         dev_docs=dev_docs, metric=metric)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tuner = ray_tune.Tuner(
            ray_tune.with_resources(trainable, {"cpu": 1, "gpu": 1 if _has_cuda() else 0}),
            param_space=initial,
            tune_config=ray_tune.TuneConfig(scheduler=scheduler, num_samples=population, time_budget_s=timeout,
                                            reuse_actors=False),
            run_config=ray_tune.RunConfig(
                name="pbt", storage_path=str(output_dir / "ray"), verbose=0,
                checkpoint_config=_pbt_checkpoint_config(ray_tune),
            ),
        )
        results = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    errors = [str(result.error) for result in results if result.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} PBT member(s) failed; first error: {errors[0]}")
    best = results.get_best_result(metric="score", mode="max", scope="all")
    checkpoint = best.get_best_checkpoint("score", "max") or best.checkpoint
    events = _pbt_events(output_dir / "ray" / "pbt", base_config.training.epochs)
    write_text_atomic(output_dir / "pbt_events.txt", "".join(line + "\n" for line in events))
    for line in events:
        logger.info("PBT %s", line)
    members = _write_pbt_members(results, output_dir / "pbt_members.csv")
    with checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / "member.json").read_text(encoding="utf-8"))
        best_config = config_from_dict(state["config"]).replace(**{"training.output": str(output_dir / "best_model")})
        model_dir, scores = _export_member(best_config, Path(folder) / "model.safetensors", train_docs, dev_docs,
                                           test_docs, output_dir / "best_model")
    header = (f"# best PBT member at epoch {state['epoch']}: dev {metric} {scores['dev_score']:.6f} "
              "(its hyperparameters changed during training; retraining with this file is not PBT)\n")
    write_text_atomic(output_dir / "best_config.yaml", header + best_config.to_yaml())
    logger.info("PBT: %d exploit/explore event(s); best member %s, dev %s %.4f at epoch %d; exported to %s",
                len(events), best.path, metric, scores["dev_score"], state["epoch"], model_dir)
    return {"best_score": scores["dev_score"], "best_epoch": state["epoch"], "best_config": best_config,
            "model_dir": model_dir, "events": events, "members": members, "test": scores.get("test")}


def _pbt_checkpoint_config(ray_tune):
    """Keep every member's checkpoints: an exploit restores the donor's checkpoint of its reported epoch (which
    the donor may already have trained past), and the export takes the best epoch of the best member. Pruning
    them by score (or count) deleted checkpoints a member was about to restore ("does not exist on storage
    anymore"). They are one weights file per member and epoch under ``<output>/ray``."""
    return ray_tune.CheckpointConfig(num_to_keep=None)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _pbt_events(experiment_dir: Path, epochs: int | None = None) -> list[str]:
    """Ray's exploit log (``pbt_global.txt``, one JSON list per exploit: target tag, donor tag, target
    iteration, donor iteration, donor config, new config) as readable lines. An exploit of a donor that had
    already trained ``epochs`` epochs trains nothing more: its line says the explored values were never used."""
    path = experiment_dir / "pbt_global.txt"
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            target, donor, target_epoch, donor_epoch, donor_config, new_config = json.loads(line)
        except (json.JSONDecodeError, ValueError):
            continue
        changes = ", ".join(f"{key} {donor_config.get(key, float('nan')):.4g} -> {value:.4g}"
                            for key, value in new_config.items() if key in PBT_KEYS)
        finished = epochs is not None and int(donor_epoch) >= epochs
        events.append(f"exploit: member {str(target).split('_')[0]} (epoch {target_epoch}) takes the weights of "
                      f"member {str(donor).split('_')[0]} (epoch {donor_epoch}); explore: {changes}"
                      + (" (not trained: the donor had finished its epochs)" if finished else ""))
    return events


def _write_pbt_members(results, path: Path) -> list[dict]:
    rows = []
    for result in results:
        frame = result.metrics_dataframe
        best_score = float(frame["score"].max()) if frame is not None and "score" in frame else math.nan
        rows.append({"member": Path(result.path).name, "best_score": best_score,
                     "last_epoch": (result.metrics or {}).get("epoch"),
                     **{key: (result.metrics or {}).get(key) for key in PBT_KEYS}})
    with atomic_path(path) as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["member"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _export_member(
    config: Config,
    weights: Path,
    train_docs: list[Document],
    dev_docs: list[Document],
    test_docs: list[Document] | None,
    output_dir: Path,
) -> tuple[Path, dict]:
    """Rebuild the member's model from its weights, score dev (and test, once) and export a model folder."""
    from safetensors.torch import load_model as load_safetensors_model

    from cardioner.export import save_model
    from cardioner.task import Task
    from cardioner.training.trainer import TrainResult

    task = Task.from_config(config, train_docs, dev_docs, test_docs)
    model = task.build_model(train_docs)
    load_safetensors_model(model, str(weights))
    thresholds = task.select_thresholds(model, dev_docs)  # multi-label sigmoid: tuned on dev, as `train` does
    result = TrainResult(dev_metrics=task.evaluate(model, dev_docs, "dev")["scores"],
                         test_metrics=task.evaluate(model, test_docs, "test")["scores"] if test_docs else None,
                         thresholds=thresholds)
    metrics = {"dev": result.dev_metrics, "test": result.test_metrics}
    path = save_model(model, task.tokenizer, output_dir, training_config=config.to_dict(), metrics=metrics,
                      card=task.card_info(result))
    scores = {"dev_score": dev_score(result.dev_metrics, config.training.metric),
              "test": (result.test_metrics or {}).get("micro")}
    return Path(path), scores
