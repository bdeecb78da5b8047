"""ModelTrainer: documents in, a trained model and its scores out, on one Accelerate loop.

``train`` prepares (corpora encoded once, a fresh model, the Accelerate objects), then runs epochs until the
last, an early stop or ``max_steps``: ``_train_one_epoch`` (forward, backward with accumulation, clip, step,
schedule) and ``_end_epoch`` (evaluate on dev, keep the best weights, decide whether to stop, checkpoint).
The loop's position is a ``TrainState``, saved with every checkpoint. Test data is scored once, after
training, with the weights chosen on dev.

Under a launcher (``torchrun``, ``accelerate launch``) every process runs this loop: each trains on its share
of every batch (``sampling``), the losses are weighted so that a step is the one-process step on the whole
batch (``union_loss``), evaluation is shared out and gathered (``Predictor.predict_windows``), and the main
process alone decides (best epoch, early stop), logs and writes, the others waiting for it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import DataLoaderConfiguration, set_seed
from safetensors.torch import load_model as load_safetensors_model
from tqdm.auto import tqdm

from cardioner import hub, plots, processes
from cardioner.calibration import fit_on_corpus
from cardioner.config import Config, ConfigError
from cardioner.data.document import CorpusError, Document
from cardioner.data.encoding import IGNORE_INDEX
from cardioner.evaluation import selection_score
from cardioner.export import card_fields, save_model
from cardioner.precision import check_training_precision
from cardioner.predictor import Predictor
from cardioner.thresholds import select_thresholds
from cardioner.training.build import Corpora, fresh_predictor
from cardioner.training.checkpoints import Checkpoints, TrainState
from cardioner.training.features import cached_training_data, uses_cached_features
from cardioner.training.freezing import apply_freezing, describe_trainable
from cardioner.training.optim import build_optimizer, build_scheduler, describe_groups, parameter_groups
from cardioner.training.sampling import LengthGroupedBatchSampler, ShardCollate, ShardData
from cardioner.values import counted

logger = logging.getLogger("cardioner")


@dataclass
class TrainResult:
    """What a training run produced (scores are span-level, exact match, micro-averaged unless stated)."""

    history: list[dict] = field(default_factory=list)  # one row per epoch: losses, dev scores, lrs, seconds
    best_epoch: int = 0
    dev_metrics: dict | None = None
    test_metrics: dict | None = None
    train_seconds: float = 0.0
    train_samples_per_second: float = 0.0  # windows per second over the training steps (evaluation excluded)
    thresholds: dict | None = None  # multi-label sigmoid, dev-tuned: {type: {"threshold", "f1", "f1_at_0.5"}}
    confidence_temperature: dict | None = None  # fitted on dev: TemperatureFit.record (metrics.json keeps it)
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Run:
    """What the loop runs on, once prepared: Accelerate's objects and the batches they feed."""

    accelerator: Accelerator
    model: torch.nn.Module  # wrapped by Accelerate (DistributedDataParallel under several processes)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: torch.utils.data.DataLoader
    sampler: LengthGroupedBatchSampler
    trainable: tuple[bool, ...] = ()  # which parameters trained when the model was wrapped for DDP


class ModelTrainer:
    """Train a cardioner model from documents.

    Args:
        config: the resolved Config (data / model / training sections).
        on_epoch_end: called with each epoch's history row (epoch, train_loss, dev_f1, ...) after the dev
            evaluation; it may raise to stop training (e.g. ``optuna.TrialPruned``), after the checkpoint.
        init_weights: a safetensors file of this task's model to start from instead of the fresh head
            (population-based training continues a better member's weights this way).
    """

    def __init__(self, config: Config, on_epoch_end: Callable[[dict], None] | None = None,
                 init_weights: str | Path | None = None) -> None:
        self.config = config
        self.on_epoch_end = on_epoch_end
        self.init_weights = init_weights
        self.checkpoints = Checkpoints(config)
        self.corpora: Corpora | None = None  # the run's corpora, encoded once
        self.model = None
        self.predictor: Predictor | None = None
        self.result: TrainResult | None = None

    # ------------------------------------------------------------------ public API
    def train(self, train_docs: list[Document], dev_docs: list[Document] | None = None,
              test_docs: list[Document] | None = None) -> TrainResult:
        """Train on ``train_docs``, select on ``dev_docs``, score ``test_docs`` once at the end."""
        config = self.config
        if config.training.resume:
            self.checkpoints.check_resumable()
        set_seed(config.training.seed)
        self.predictor, self.corpora = fresh_predictor(config, train_docs, dev_docs, test_docs)
        self.model = self.predictor.model
        if self.init_weights is not None:
            load_safetensors_model(self.model, str(self.init_weights))

        run = self._prepare()
        state = self.checkpoints.load(run.accelerator) if config.training.resume else TrainState()
        for epoch in range(state.epoch, config.training.epochs):
            if state.stopped:  # a resumed run that had already stopped (early, or at max_steps)
                break
            epoch_seconds = self._train_one_epoch(run, state, epoch)
            row = self._end_epoch(run, state, epoch, epoch_seconds)
            if self.on_epoch_end is not None:
                self.on_epoch_end(row)
        self.result = self._finish(run, state)
        return self.result

    def save(self, output_dir: str | Path) -> Path:
        """Export the trained model folder (atomically) with its config, metrics, curves and model card."""
        if self.predictor is None or self.result is None:
            raise RuntimeError("ModelTrainer.save() called before train()")
        result, encoder = self.result, self.predictor.encoder
        metrics = {"dev": result.dev_metrics, "test": result.test_metrics, "best_epoch": result.best_epoch,
                   "train_seconds": result.train_seconds,
                   "train_samples_per_second": result.train_samples_per_second}
        if result.confidence_temperature is not None:  # cardioner calibrate replaces it with its own fit
            metrics["confidence_temperature"] = result.confidence_temperature
        title = f"{self.config.model.model} — {self.config.model.head}" + (
            " + CRF" if self.config.model.use_crf else ""
        )

        def extra(folder: Path) -> None:
            (folder / "history.json").write_text(json.dumps(result.history, indent=2), encoding="utf-8")
            if result.history:
                plots.plot_learning_curves(result.history, folder / "learning_curves.png", title=title,
                                     best_epoch=result.best_epoch)

        card = card_fields(
            self.config, self.corpora.labels, encoder.max_length, encoder.stride, self.corpora.sizes()
        )
        if processes.is_main():  # one export, written by one process; the others wait for it
            save_model(self.model, encoder.tokenizer, output_dir, training_config=self.config.to_dict(),
                       metrics=metrics, card=card, extra_files=extra)
            output = self.config.training.output
            if output and Path(output_dir).resolve() == Path(output).resolve():
                self.checkpoints.remove()  # the export is complete: checkpoints are spent
        processes.barrier()
        return Path(output_dir)

    # ------------------------------------------------------------------ the loop
    def _prepare(self) -> Run:
        """Accelerate's objects for the run: the training batches, the optimiser and the schedule."""
        config = self.config.training
        # bf16 only where native; checked before Accelerate fixes its process-wide precision state
        check_training_precision(config.mixed_precision, "cuda" if torch.cuda.is_available() else "cpu")
        processes.state()  # the processes first: on CPU under a launcher, Accelerate must know they share it
        accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=config.log_with,
            project_dir=str(tracker_folder(self.config)) if config.log_with else None,
            # batch_size is the global batch, split between the processes: one schedule step per step
            dataloader_config=DataLoaderConfiguration(split_batches=True),
        )
        if not config.resume:
            if accelerator.is_main_process:
                self.checkpoints.remove_stale()
            accelerator.wait_for_everyone()
        encoded = self.corpora.train.windows
        windows = [window for window in encoded if _has_labels(window)]
        if not windows:
            raise CorpusError(
                "the training corpus produced no windows with words (no text?)", self.config.data.train
            )
        if len(windows) < len(encoded):  # empty documents: nothing to learn, and a loss of 0 in the mean
            logger.info("train: %s without any word left out of training (empty documents)",
                        counted(len(encoded) - len(windows), "window"))
        sampler = LengthGroupedBatchSampler(
            [len(w["input_ids"]) for w in windows], config.batch_size, config.seed, config.group_by_length,
            num_shards=accelerator.num_processes, shard=accelerator.process_index,
        )
        data, collate = windows, self.predictor.collate
        # frozen backbone: run it once per window, train the head on that (a cache folder: filled once, by
        # the main process, before the others read it; in memory: every process computes its own at once)
        if uses_cached_features(self.config):
            first = accelerator.main_process_first() if config.feature_cache_dir else contextlib.nullcontext()
            with first:
                data, collate = cached_training_data(self.model, windows, collate, config.feature_cache_dir,
                                                     config.eval_batch_size, accelerator.device)
        # Its own generator: each new iterator draws a seed from it, not from the global RNG that dropout
        # uses, so a run resumed mid-epoch (a fresh iterator after the restored RNG state) sees the same
        # dropout masks. The sampler already gives each process its share: Accelerate only places batches.
        loader = torch.utils.data.DataLoader(ShardData(data), batch_sampler=sampler,
                                             collate_fn=ShardCollate(collate),
                                             generator=torch.Generator().manual_seed(config.seed))
        loader = prepare_data_loader(loader, accelerator.device, num_processes=1, process_index=0,
                                     put_on_device=True, rng_types=None)
        steps_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
        total_steps = steps_per_epoch * config.epochs
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        optimizer = build_optimizer(parameter_groups(self.model, config), config)
        scheduler = build_scheduler(optimizer, config, total_steps, steps_per_epoch)
        apply_freezing(self.model, self.config, 0)  # DDP takes in the parameters that train when it wraps
        model, optimizer, scheduler = accelerator.prepare(self.model, optimizer, scheduler)
        if config.log_with and accelerator.is_main_process:
            accelerator.init_trackers("cardioner", config=_flat(self.config.to_dict()))
        return Run(accelerator, model, optimizer, scheduler, loader, sampler, _trainable(self.model))

    def _train_one_epoch(self, run: Run, state: TrainState, epoch: int) -> float:
        """Forward, backward (accumulated), clip, step and schedule over one epoch's batches (after those a
        resumed run had done); a checkpoint every ``checkpoint_steps``; stop at ``max_steps``. Returns the
        epoch's seconds."""
        config, accelerator = self.config.training, run.accelerator
        run.model.train()
        apply_freezing(self.model, self.config, epoch)  # which backbone layers train in this epoch
        model = _follow_trainable(run, self.model)
        logger.info("epoch %d: %s", epoch + 1, describe_trainable(describe_groups(run.optimizer)))
        batches = self._batches(run, epoch, state.step_in_epoch)
        progress = tqdm(
            total=len(run.loader),
            initial=state.step_in_epoch,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not accelerator.is_local_main_process,
            leave=False,
        )
        started = epoch_started = time.perf_counter()
        for batch in batches:
            kept = batch.pop("kept")  # 0 for a filler (a batch too small to give this process a window)
            with accelerator.accumulate(model):
                loss, batch_loss, batch_windows = union_loss(accelerator, model(**batch), kept,
                                                             int(batch["input_ids"].shape[0]))
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad()
            state.add_batch(batch_windows, batch_loss)
            progress.update(1)
            progress.set_postfix(loss=f"{state.epoch_loss:.4f}")
            if accelerator.sync_gradients:
                state.global_step += 1
                if config.checkpoint_steps and state.global_step % config.checkpoint_steps == 0:
                    state.train_seconds += time.perf_counter() - started
                    started = time.perf_counter()
                    self.checkpoints.save(accelerator, state)
                if config.max_steps and state.global_step >= config.max_steps:
                    state.stopped = True
                    break
        progress.close()
        state.train_seconds += time.perf_counter() - started
        return time.perf_counter() - epoch_started

    def _end_epoch(self, run: Run, state: TrainState, epoch: int, epoch_seconds: float) -> dict:
        """Evaluate on dev, keep the best weights, decide whether
        to stop (early), checkpoint; the epoch's row."""
        config = self.config.training
        row = {"epoch": epoch + 1, "global_step": state.global_step, "epoch_seconds": epoch_seconds,
               "train_loss": state.epoch_loss,
               "lr": {g.get("name", str(i)): g["lr"] for i, g in enumerate(run.optimizer.param_groups)},
               "parameter_groups": describe_groups(run.optimizer)}
        if self.corpora.dev is not None:
            dev = self.predictor.evaluate(self.corpora.dev)
            row.update({"dev_loss": dev.loss, "dev_f1": dev.scores["micro"]["f1"], "dev_scores": dev.scores})
            score = selection_score(dev.scores, config.metric)
        else:
            score = -row["train_loss"]
        # decided once, by the main process, and broadcast (every process holds the same gathered scores)
        improved = processes.broadcast(_improved(score, state.best_score, config.min_delta))
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch + 1, 0
            self.checkpoints.save_best(self.model)
        else:
            state.bad_epochs += 1
        state.history.append(row)
        logger.info("epoch %d: train loss %.4f%s", epoch + 1, row["train_loss"],
                    f", dev F1 {row['dev_f1']:.4f}" if "dev_f1" in row else "")
        if config.log_with:
            run.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=epoch + 1)
        state.next_epoch()
        stop = config.patience and state.bad_epochs >= config.patience and epoch + 1 >= config.min_epochs
        if processes.broadcast(bool(stop)):
            state.stopped = state.stopped_early = True
        self.checkpoints.save(run.accelerator, state)
        return row

    def _finish(self, run: Run, state: TrainState) -> TrainResult:
        """The best weights back in the model; thresholds tuned and the confidence temperature fitted on dev,
        and the final scores taken with them."""
        self.model = run.accelerator.unwrap_model(run.model)
        self.checkpoints.load_best(self.model)
        self.predictor.model = self.model
        result = TrainResult(
            history=state.history,
            best_epoch=state.best_epoch,
            train_seconds=state.train_seconds,
            train_samples_per_second=state.train_windows_seen / max(state.train_seconds, 1e-9),
            stopped_early=state.stopped_early,
        )
        dev, test = self.corpora.dev, self.corpora.test
        if dev is not None:
            result.thresholds = select_thresholds(self.predictor, self.config.model, dev)  # from dev only
            self.model.config.thresholds = processes.broadcast(self.model.config.thresholds)  # the main's
            if self.config.model.confidence_calibration == "dev":  # confidences only: no span changes
                fit, _ = fit_on_corpus(self.predictor, dev, desc=f"calibrating on {dev.name}")
                self.model.config.confidence_temperature = processes.broadcast(fit.temperature)
                dev_path = self.config.data.dev
                dev_name = hub.data_name(dev_path) if isinstance(dev_path, (str, Path)) else None
                result.confidence_temperature = fit.record(dev_name, len(dev.documents))
                logger.info("confidence temperature fitted on dev: %.4f (NLL per word %.4f -> %.4f)",
                            fit.temperature, fit.nll_before, fit.nll_after)
            result.dev_metrics = self.predictor.evaluate(dev).scores
        if test is not None:
            result.test_metrics = self.predictor.evaluate(test).scores
        if self.config.training.log_with:
            run.accelerator.end_training()
        return result

    @staticmethod
    def _batches(run: Run, epoch: int, done: int):
        """The epoch's batches, after the ``done`` ones a resumed run had already trained on."""
        run.loader.set_epoch(epoch)
        # directly: under several processes the loader's set_epoch stops at its shard
        run.sampler.set_epoch(epoch)
        if not done:
            return run.loader
        batches = run.accelerator.skip_first_batches(run.loader, done)
        batches.set_epoch(epoch)
        return batches


# the packages each tracker of training.log_with can use (accelerate drops a tracker whose package is missing)
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",),
                    "mlflow": ("mlflow",)}


def tracker_folder(config: Config) -> Path | None:
    """Where the tracker of ``training.log_with`` writes: ``<training.output>.logs``, beside the export, which
    a later export leaves alone (the checkpoint folder is removed once the export is complete)."""
    output = config.training.output
    return Path(output).parent / f"{Path(output).name}.logs" if output else None


def check_tracker(config: Config) -> None:
    """Refuse, before any work, a ``training.log_with`` that would log nowhere: no output to keep its files
    beside, or its package missing (accelerate would drop the tracker without a word)."""
    tracker = config.training.log_with
    if tracker is None:
        return
    if config.training.output is None:
        raise ConfigError(f"training.log_with={tracker} needs training.output: its files go to "
                          "<training.output>.logs")
    packages = TRACKER_PACKAGES[tracker]
    if not any(importlib.util.find_spec(package) for package in packages):
        raise ConfigError(f"training.log_with={tracker} needs the {' or '.join(packages)} package, which is "
                          f"not installed: pip install {packages[0]}")


def union_loss(accelerator: Accelerator, output, kept: torch.Tensor,
               windows: int) -> tuple[torch.Tensor, float, int]:
    """This process's loss, weighted so that the gradients DDP averages are those of the whole batch.

    The model's loss is a mean over ``output.loss_weight`` (its counted words, as it weighs them). The
    whole batch's loss is ``sum(loss_r * weight_r) / sum(weight_r)`` over the processes r, and DDP averages
    the processes' gradients, so process r back-propagates ``loss_r * weight_r * n / sum(weight_r)``; a
    summed loss (no weight) is the sum of the processes' sums. A filler (``kept`` 0) adds nothing but still
    takes part in the exchange. In one process the loss is left as it is.

    Returns:
        (the loss to back-propagate, the whole batch's loss, the whole batch's windows).
    """
    loss = output.loss
    if accelerator.num_processes == 1:
        return loss, float(loss.detach()), windows
    summed = output.loss_weight is None
    weight = (torch.ones_like(loss) if summed else output.loss_weight).detach().float() * kept
    totals = accelerator.reduce(torch.stack([weight, loss.detach().float() * weight, kept * windows]), "sum")
    if summed:
        return loss * kept * accelerator.num_processes, float(totals[1]), int(totals[2])
    scale = weight * accelerator.num_processes / totals[0].clamp(min=1e-12)
    return loss * scale, float(totals[1] / totals[0].clamp(min=1e-12)), int(totals[2])


def _trainable(model: torch.nn.Module) -> tuple[bool, ...]:
    return tuple(parameter.requires_grad for parameter in model.parameters())


def _follow_trainable(run: Run, model: torch.nn.Module) -> torch.nn.Module:
    """The model to train, wrapped again for DDP when the set of trainable parameters changed (freezing
    schedules): DDP exchanges the gradients of the parameters that trained when it wrapped the model, and
    waits for all of them, so a parameter unfrozen later would train apart on each process and one frozen
    later would stall the exchange."""
    if run.accelerator.num_processes == 1 or _trainable(model) == run.trainable:
        return run.model
    run.accelerator._models.remove(model)  # Accelerate has no "unprepare"; prepare_model lists it again
    run.model = None  # the old wrapper goes, and its gradient hooks with it
    run.model = run.accelerator.prepare_model(model)
    run.trainable = _trainable(model)
    return run.model


def _has_labels(window: dict) -> bool:
    """Whether a window has a labelled position (a word): a window of an empty document has none."""
    return any(value != IGNORE_INDEX for row in window["labels"] for value in row)


def _improved(score: float, best: float | None, min_delta: float) -> bool:
    """Whether an epoch's selection score beats the best so far; a
    NaN score never does (and never becomes best)."""
    if math.isnan(score):
        return False
    return best is None or score > best + min_delta


def _flat(nested: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return flat
