"""Population-based training on Ray Tune: members train side by side, the weakest copy the strongest.

Every member trains ``training.epochs`` epochs; after each epoch the bottom 20% load the weights of a
top-20% member (exploit) and multiply lr, weight decay, dropout and warm-up by 0.8 or 1.2 (explore). The
best member (best dev score at any epoch) is exported as a normal model folder. Ray is an optional
dependency (the ``ray`` extra): it is imported where it is used.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model

from cardioner import processes
from cardioner.config import Config, absolute_paths, config_from_dict
from cardioner.data.common import atomic_path, write_text_atomic
from cardioner.data.document import Document
from cardioner.evaluation import selection_score
from cardioner.export import card_fields, save_model
from cardioner.thresholds import select_thresholds
from cardioner.training.build import fresh_predictor
from cardioner.training.folds import read_train_and_dev
from cardioner.training.run import check_before_reading, read_split
from cardioner.training.trainer import ModelTrainer
from cardioner.values import counted

logger = logging.getLogger("cardioner")

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


def import_ray():
    """(ray, ray.tune, PopulationBasedTraining); RayUnavailableError in one sentence when Ray cannot load."""
    try:
        import ray  # optional (the ray extra), and slow to import
        from ray import tune as ray_tune
        from ray.tune.schedulers import PopulationBasedTraining
    except Exception as error:  # ImportError, or a platform without Ray wheels failing at import
        raise RayUnavailableError(
            f"population-based training needs Ray Tune, which is not available here ({type(error).__name__}: "
            f"{error}); install it with: pip install 'cardioner[ray]'"
        ) from None
    return ray, ray_tune, PopulationBasedTraining


def _clip(key: str, value: float) -> float:
    low, high = PBT_KEYS[key][1]
    return min(max(float(value), low), high)


def _initial_distribution(ray_tune, key: str, base_value: float):
    """Members start spread around the base value (log-uniform for
    lr; 0 spreads to 0.1 of the valid range)."""
    (low, high), (_, limit) = PBT_KEYS[key]
    if key == "training.lr":
        return ray_tune.loguniform(base_value * low, base_value * high)
    if base_value <= 0:
        return ray_tune.uniform(0.0, 0.1 * limit)
    return ray_tune.uniform(_clip(key, base_value * low), _clip(key, base_value * high))


class MemberReporter:
    """After each of a member's epochs: its weights as a Ray checkpoint, and its dev score reported to Ray.

    Args:
        config: the member's config for this stretch of training (``training.epochs``: the epochs left).
        start_epoch: epochs the member had trained before (its donor's, after an exploit).
        total_epochs: the member's epochs in all.
        metric: the dev metric.
        work_dir: where the checkpoints are staged.
    """

    def __init__(
        self, config: Config, start_epoch: int, total_epochs: int, metric: str, work_dir: Path
    ) -> None:
        self.config = config
        self.start_epoch = start_epoch
        self.total_epochs = total_epochs
        self.metric = metric
        self.work_dir = work_dir
        self.trainer: ModelTrainer | None = None  # set once the member's trainer exists

    def __call__(self, row: dict) -> None:
        from ray import tune as ray_tune  # optional (the ray extra); this runs inside a Ray worker

        epoch = self.start_epoch + row["epoch"]
        folder = Path(tempfile.mkdtemp(prefix=f"epoch{epoch}-", dir=self.work_dir))
        save_safetensors_model(self.trainer.model, str(folder / "model.safetensors"))
        member_config = self.config.replace(**{"training.epochs": self.total_epochs})
        (folder / "member.json").write_text(json.dumps({"epoch": epoch, "config": member_config.to_dict()}),
                                            encoding="utf-8")
        score = selection_score(row["dev_scores"], self.metric)
        ray_tune.report(
            {
                "score": score,
                "dev_f1": row["dev_f1"],
                "epoch": epoch,
                "train_loss": row["train_loss"],
                **{key: self.config.get(key) for key in PBT_KEYS},
            },
            checkpoint=ray_tune.Checkpoint.from_directory(str(folder)),
        )


def train_member(
    space: dict, base: dict, train_docs: list[Document], dev_docs: list[Document], metric: str
) -> None:
    """One PBT member (a Ray Tune function trainable): one report per epoch, with its weights as checkpoint.

    After an exploit, Ray restarts it with the donor's checkpoint and the perturbed values: training goes on
    from the donor's weights and epoch with a fresh optimiser and schedule over the remaining epochs.
    """
    from ray import tune as ray_tune  # optional (the ray extra); this runs inside a Ray worker

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
    reporter = MemberReporter(config, start_epoch, total_epochs, metric, work_dir)
    reporter.trainer = ModelTrainer(config, on_epoch_end=reporter, init_weights=init_weights)
    reporter.trainer.train(train_docs, dev_docs)


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

    Args:
        base_config: the starting config; members start from values spread around its lr/wd/dropout/warm-up.
        population: number of members.
        output_dir: gets best_model/ (the export), best_config.yaml, pbt_members.csv, pbt_events.txt.
        metric: the dev metric to maximise; None = the base config's training.metric.
        timeout: wall-clock budget in seconds.
        train_docs, dev_docs, test_docs: documents instead of the config's corpora (test: scored once, at
        export). num_cpus: CPUs Ray may use (default: all).

    Returns:
        {"best_score", "best_config", "model_dir", "events": [exploit lines], "members": [...]}.
    """
    processes.refuse_several("population-based training")
    ray, ray_tune, PopulationBasedTraining = import_ray()
    if population < 2:
        raise ValueError(f"population-based training needs a population of at least 2, got {population}")
    metric = metric or base_config.training.metric
    base_config = base_config.replace(**{"training.metric": metric, "training.output": None,
                                         "training.resume": False, "training.patience": 0})
    output_dir = Path(output_dir).resolve()
    if train_docs is None:
        check_before_reading(base_config, [output_dir / "best_model"])
        train_docs, dev_docs = read_train_and_dev(base_config, pooled=False)
        test_docs = read_split(base_config.data.test, base_config, "test")
    output_dir.mkdir(parents=True, exist_ok=True)
    initial = {key: _initial_distribution(ray_tune, key, base_config.get(key)) for key in PBT_KEYS}
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration", metric="score", mode="max", perturbation_interval=1,
        hyperparam_mutations=initial, quantile_fraction=PBT_QUANTILE, resample_probability=0.0,
        perturbation_factors=PBT_FACTORS, log_config=True,
    )
    trainable = ray_tune.with_parameters(train_member, base=base_config.to_dict(), train_docs=train_docs,
                                         dev_docs=dev_docs, metric=metric)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tuner = ray_tune.Tuner(
            ray_tune.with_resources(trainable, {"cpu": 1, "gpu": 1 if torch.cuda.is_available() else 0}),
            param_space=initial,
            tune_config=ray_tune.TuneConfig(
                scheduler=scheduler, num_samples=population, time_budget_s=timeout, reuse_actors=False
            ),
            run_config=ray_tune.RunConfig(
                name="pbt",
                storage_path=str(output_dir / "ray"),
                verbose=0,
                checkpoint_config=_pbt_checkpoint_config(ray_tune),
            ),
        )
        results = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    errors = [str(result.error) for result in results if result.error is not None]
    if errors:
        raise RuntimeError(f"{counted(len(errors), 'PBT member')} failed; first error: {errors[0]}")
    best = results.get_best_result(metric="score", mode="max", scope="all")
    checkpoint = best.get_best_checkpoint("score", "max") or best.checkpoint
    events = pbt_events(output_dir / "ray" / "pbt", base_config.training.epochs)
    write_text_atomic(output_dir / "pbt_events.txt", "".join(line + "\n" for line in events))
    for line in events:
        logger.info("PBT %s", line)
    members = _write_pbt_members(results, output_dir / "pbt_members.csv")
    with checkpoint.as_directory() as folder:
        state = json.loads((Path(folder) / "member.json").read_text(encoding="utf-8"))
        best_config = absolute_paths(config_from_dict(state["config"]).replace(
            **{"training.output": str(output_dir / "best_model")}
        ))
        model_dir, scores = export_member(
            best_config,
            Path(folder) / "model.safetensors",
            train_docs,
            dev_docs,
            test_docs,
            output_dir / "best_model",
        )
    header = (f"# best PBT member at epoch {state['epoch']}: dev {metric} {scores['dev_score']:.6f} "
              "(its hyperparameters changed during training; retraining with this file is not PBT)\n")
    write_text_atomic(output_dir / "best_config.yaml", header + best_config.to_yaml())
    logger.info("PBT: %s; best member %s, dev %s %.4f at epoch %d; exported to %s",
                counted(len(events), "exploit/explore event"), best.path, metric, scores["dev_score"],
                state["epoch"], model_dir)
    return {"best_score": scores["dev_score"], "best_epoch": state["epoch"], "best_config": best_config,
            "model_dir": model_dir, "events": events, "members": members, "test": scores.get("test")}


def _pbt_checkpoint_config(ray_tune):
    """Keep every member's checkpoints: an exploit restores the donor's checkpoint of its reported epoch
    (which the donor may already have trained past), and the export takes the best epoch of the best member.
    Pruning them by score (or count) deleted checkpoints a member was about to restore ("does not exist on
    storage anymore"). They are one weights file per member and epoch under ``<output>/ray``."""
    return ray_tune.CheckpointConfig(num_to_keep=None)


def pbt_events(experiment_dir: Path, epochs: int | None = None) -> list[str]:
    """Ray's exploit log (``pbt_global.txt``, one JSON list per exploit: target tag, donor tag, target
    iteration, donor iteration, donor config, new config) as readable lines. An exploit of a donor that had
    already trained ``epochs`` epochs trains nothing more: its
    line says the explored values were never used."""
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
        events.append(
            f"exploit: member {str(target).split('_')[0]} (epoch {target_epoch}) takes the weights of "
            f"member {str(donor).split('_')[0]} (epoch {donor_epoch}); explore: {changes}"
            + (" (not trained: the donor had finished its epochs)" if finished else "")
        )
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


def export_member(
    config: Config,
    weights: Path,
    train_docs: list[Document],
    dev_docs: list[Document],
    test_docs: list[Document] | None,
    output_dir: Path,
) -> tuple[Path, dict]:
    """Rebuild the member's model from its weights, score dev (and test, once) and export a model folder.

    Returns:
        (the export folder, {"dev_score": the dev metric, "test": test micro scores or None}).
    """
    predictor, corpora = fresh_predictor(config, train_docs, dev_docs, test_docs)
    model, encoder = predictor.model, predictor.encoder
    load_safetensors_model(model, str(weights))
    # multi-label sigmoid: tuned on dev, as `train` does
    select_thresholds(predictor, config.model, corpora.dev)
    metrics = {"dev": predictor.evaluate(corpora.dev).scores,
               "test": predictor.evaluate(corpora.test).scores if corpora.test else None}
    card = card_fields(config, corpora.labels, encoder.max_length, encoder.stride, corpora.sizes())
    path = save_model(model, encoder.tokenizer, output_dir, training_config=config.to_dict(), metrics=metrics,
                      card=card)
    scores = {"dev_score": selection_score(metrics["dev"], config.training.metric),
              "test": (metrics["test"] or {}).get("micro")}
    return Path(path), scores
