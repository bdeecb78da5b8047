"""ModelTrainer: documents in, a trained model and its scores out, on one Accelerate loop.

The loop in ``_fit`` reads top to bottom: for each epoch, for each batch: forward, backward (accumulated),
clip, step, schedule; then evaluate on dev, keep the best weights, stop early. Test data is scored once, after
training, with the weights chosen on dev.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model
from tqdm.auto import tqdm

from cardioner.config import Config
from cardioner.data.document import Document
from cardioner.training.features import cached_training_data, uses_cached_features
from cardioner.training.freezing import describe_trainable
from cardioner.training.optim import build_optimizer, build_scheduler, describe_groups, parameter_groups
from cardioner.training.sampling import LengthGroupedBatchSampler

logger = logging.getLogger("cardioner")

# Keys that do not change what a run computes: a resumed run may differ from its checkpoint in these only.
RESUME_FREE_KEYS = ("data.test", "training.output", "training.resume", "training.log_with", "training.checkpoint_steps",
                    "training.feature_cache_dir")


@dataclass
class TrainResult:
    """What a training run produced (scores are span-level, exact match, micro-averaged unless stated)."""

    history: list[dict] = field(default_factory=list)  # one row per epoch: losses, dev scores, lrs, seconds
    best_epoch: int = 0
    dev_metrics: dict | None = None
    test_metrics: dict | None = None
    train_seconds: float = 0.0
    train_samples_per_second: float = 0.0  # windows per second over the training steps (evaluation excluded)
    thresholds: dict | None = None  # multi-label sigmoid: {type: {"threshold", "f1", "f1_at_0.5"}} tuned on dev
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class ModelTrainer:
    """Train a cardioner model from documents.

    Args:
        config: the resolved Config (data / model / training sections).
        on_epoch_end: called with each epoch's history row (epoch, train_loss, dev_f1, ...) after the dev
            evaluation; it may raise to stop training (e.g. ``optuna.TrialPruned``), after the checkpoint.
        init_weights: a safetensors file of this task's model to start from instead of the fresh head
            (population-based training continues a better member's weights this way).
    """

    def __init__(self, config: Config, on_epoch_end=None, init_weights: str | Path | None = None):
        from cardioner.task import Task  # the glue shared by training, evaluation and prediction

        self.config = config
        self.task: Task | None = None
        self.model = None
        self.result: TrainResult | None = None
        self.on_epoch_end = on_epoch_end
        self.init_weights = init_weights
        self._task_class = Task

    # ------------------------------------------------------------------ public API
    def train(
        self,
        train_docs: list[Document],
        dev_docs: list[Document] | None = None,
        test_docs: list[Document] | None = None,
    ) -> TrainResult:
        """Train on ``train_docs``, select on ``dev_docs``, score ``test_docs`` once at the end."""
        config = self.config
        if config.training.resume:
            self._check_resumable(self._checkpoint_dir())
        set_seed(config.training.seed)
        self.task = self._task_class.from_config(config, train_docs, dev_docs, test_docs)
        self.model = self.task.build_model(train_docs)
        if self.init_weights is not None:
            load_safetensors_model(self.model, str(self.init_weights))
        self.result = self._fit(train_docs, dev_docs, test_docs)
        return self.result

    def save(self, output_dir: str | Path) -> Path:
        """Export the trained model folder (atomically) with its config, metrics, curves and model card."""
        if self.model is None or self.task is None or self.result is None:
            raise RuntimeError("ModelTrainer.save() called before train()")
        from cardioner.export import save_model
        from cardioner.plots import plot_learning_curves

        result = self.result
        metrics = {"dev": result.dev_metrics, "test": result.test_metrics, "best_epoch": result.best_epoch,
                   "train_seconds": result.train_seconds,
                   "train_samples_per_second": result.train_samples_per_second}

        def extra(folder: Path) -> None:
            (folder / "history.json").write_text(json.dumps(result.history, indent=2), encoding="utf-8")
            if result.history:
                plot_learning_curves(result.history, folder / "learning_curves.png",
                                     title=f"{self.config.model.model} — {self.config.model.head}"
                                     + (" + CRF" if self.config.model.use_crf else ""),
                                     best_epoch=result.best_epoch)

        path = save_model(
            self.model, self.task.tokenizer, output_dir,
            training_config=self.config.to_dict(), metrics=metrics,
            card=self.task.card_info(result), extra_files=extra,
        )
        checkpoint_dir = self._checkpoint_dir()
        if checkpoint_dir is not None and Path(output_dir).resolve() == Path(self.config.training.output).resolve():
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the export is complete: checkpoints are spent
        return path

    # ------------------------------------------------------------------ the loop
    def _fit(self, train_docs, dev_docs, test_docs) -> TrainResult:
        config, task, model = self.config.training, self.task, self.model
        checkpoint_dir = self._checkpoint_dir()
        accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            log_with=config.log_with,
            project_dir=str(checkpoint_dir) if checkpoint_dir else None,
        )
        if checkpoint_dir is not None and not config.resume:
            if accelerator.is_main_process:
                _remove_stale_checkpoints(checkpoint_dir)
            accelerator.wait_for_everyone()
        encoded = task.encode(train_docs, "train")
        train_windows = [window for window in encoded if _has_labels(window)]
        if not train_windows:
            raise ValueError("the training corpus produced no windows with words (no text?)")
        if len(train_windows) < len(encoded):  # empty documents: nothing to learn, and a loss of 0 in the mean
            logger.info("train: %d window(s) without any word left out of training (empty documents)",
                        len(encoded) - len(train_windows))
        sampler = LengthGroupedBatchSampler(
            [len(w["input_ids"]) for w in train_windows], config.batch_size, config.seed, config.group_by_length
        )
        train_data, collate = train_windows, task.collate
        if uses_cached_features(self.config):  # frozen backbone: run it once per window, train the head on that
            train_data, collate = cached_training_data(model, train_windows, task.collate, config.feature_cache_dir,
                                                       config.eval_batch_size, accelerator.device)
        # Its own generator: each new iterator draws a seed from it, not from the global RNG that dropout uses,
        # so a run resumed mid-epoch (a fresh iterator after the restored RNG state) sees the same dropout masks.
        loader = torch.utils.data.DataLoader(train_data, batch_sampler=sampler, collate_fn=collate,
                                             generator=torch.Generator().manual_seed(config.seed))
        steps_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
        total_steps = steps_per_epoch * config.epochs
        if config.max_steps:
            total_steps = min(total_steps, config.max_steps)
        optimizer = build_optimizer(parameter_groups(model, config), config)
        scheduler = build_scheduler(optimizer, config, total_steps, steps_per_epoch)
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
        if config.log_with:
            accelerator.init_trackers("cardioner", config=_flat(self.config.to_dict()))

        state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "history": [], "best_score": None,
                 "best_epoch": 0, "bad_epochs": 0, "train_seconds": 0.0, "train_windows_seen": 0,
                 "epoch_loss_sum": 0.0, "epoch_loss_count": 0}
        if config.resume:
            state = self._resume(accelerator, checkpoint_dir, state)
        result = TrainResult(stopped_early=state.get("stopped_early", False))
        stop = state.get("stopped", False)  # a resumed run that had already stopped (early, or at max_steps)
        for epoch in range(state["epoch"], state["epoch"] if stop else config.epochs):
            model.train()
            task.on_epoch_start(model, epoch)
            logger.info("epoch %d: %s", epoch + 1, describe_trainable(describe_groups(optimizer)))
            loader.set_epoch(epoch)
            sampler.set_epoch(epoch)  # directly: under several processes the loader's set_epoch stops at its shard
            batches = accelerator.skip_first_batches(loader, state["step_in_epoch"]) if state["step_in_epoch"] else loader
            if batches is not loader:
                batches.set_epoch(epoch)
            progress = tqdm(total=len(loader), initial=state["step_in_epoch"], desc=f"epoch {epoch + 1}/{config.epochs}",
                            disable=not accelerator.is_local_main_process, leave=False)
            started = epoch_started = time.perf_counter()
            for batch in batches:
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                state["step_in_epoch"] += 1
                state["train_windows_seen"] += int(batch["input_ids"].shape[0])
                state["epoch_loss_sum"] += float(loss.detach())
                state["epoch_loss_count"] += 1
                progress.update(1)
                progress.set_postfix(loss=f"{state['epoch_loss_sum'] / state['epoch_loss_count']:.4f}")
                if accelerator.sync_gradients:
                    state["global_step"] += 1
                    if config.checkpoint_steps and state["global_step"] % config.checkpoint_steps == 0:
                        state["train_seconds"] += time.perf_counter() - started
                        started = time.perf_counter()
                        self._checkpoint(accelerator, checkpoint_dir, state)
                    if config.max_steps and state["global_step"] >= config.max_steps:
                        stop = True
                        break
            progress.close()
            state["train_seconds"] += time.perf_counter() - started
            row = {"epoch": epoch + 1, "global_step": state["global_step"],
                   "epoch_seconds": time.perf_counter() - epoch_started,
                   "train_loss": state["epoch_loss_sum"] / max(state["epoch_loss_count"], 1),
                   "lr": {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)},
                   "parameter_groups": describe_groups(optimizer)}
            if dev_docs:
                dev = task.evaluate(accelerator.unwrap_model(model), dev_docs, "dev")
                row.update({"dev_loss": dev["loss"], "dev_f1": dev["scores"]["micro"]["f1"],
                            "dev_scores": dev["scores"]})
                score = _selection_score(dev["scores"], config.metric)
            else:
                score = -row["train_loss"]
            if _improved(score, state["best_score"], config.min_delta):
                state["best_score"], state["best_epoch"], state["bad_epochs"] = score, epoch + 1, 0
                self._save_best(accelerator, model, checkpoint_dir)
            else:
                state["bad_epochs"] += 1
            state["history"].append(row)
            logger.info("epoch %d: train loss %.4f%s", epoch + 1, row["train_loss"],
                        f", dev F1 {row['dev_f1']:.4f}" if "dev_f1" in row else "")
            if config.log_with:
                accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=epoch + 1)
            state.update(epoch=epoch + 1, step_in_epoch=0, epoch_loss_sum=0.0, epoch_loss_count=0)
            if config.patience and state["bad_epochs"] >= config.patience and epoch + 1 >= config.min_epochs:
                result.stopped_early = True
                stop = True
            state.update(stopped=stop, stopped_early=result.stopped_early)
            self._checkpoint(accelerator, checkpoint_dir, state)
            if self.on_epoch_end is not None:
                self.on_epoch_end(row)
            if stop:
                break

        model = accelerator.unwrap_model(model)
        self._load_best(model, checkpoint_dir)
        self.model = model
        result.history = state["history"]
        result.best_epoch = state["best_epoch"]
        result.train_seconds = state["train_seconds"]
        result.train_samples_per_second = state["train_windows_seen"] / max(state["train_seconds"], 1e-9)
        if dev_docs:
            result.thresholds = task.select_thresholds(model, dev_docs)  # multi-label sigmoid: from dev only
            result.dev_metrics = task.evaluate(model, dev_docs, "dev")["scores"]
        if test_docs:
            result.test_metrics = task.evaluate(model, test_docs, "test")["scores"]
        if config.log_with:
            accelerator.end_training()
        return result

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_dir(self) -> Path | None:
        output = self.config.training.output
        if not output:
            return None
        output = Path(output)
        return output.parent / (output.name + ".checkpoints")

    def _checkpoint(self, accelerator: Accelerator, checkpoint_dir: Path | None, state: dict) -> None:
        """Save model/optimiser/scheduler/RNG states and the loop state; written to a temporary name, then renamed."""
        if checkpoint_dir is None:
            return
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        final = checkpoint_dir / f"step_{state['global_step']:08d}_{state['epoch']:03d}_{state['step_in_epoch']:06d}"
        temporary = checkpoint_dir / (final.name + ".tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        accelerator.save_state(str(temporary))
        fingerprint, settings = _run_fingerprint(self.config)  # checked by --resume; the settings name what differs
        saved = {**state, "config_sha256": fingerprint, "config": settings}
        (temporary / "trainer_state.json").write_text(json.dumps(saved, indent=1), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        temporary.rename(final)
        for old in sorted(p for p in checkpoint_dir.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)

    def _check_resumable(self, checkpoint_dir: Path | None) -> None:
        """Refuse to resume a checkpoint written by a run with other settings (before any work is done)."""
        if checkpoint_dir is None:
            raise ValueError("--resume needs --output (checkpoints live next to the output folder)")
        latest = _latest_checkpoint(checkpoint_dir)
        if latest is None:
            return
        saved = json.loads((latest / "trainer_state.json").read_text(encoding="utf-8"))
        if "config_sha256" not in saved:
            logger.warning("--resume: %s records no configuration; resuming it unchecked", latest)
            return
        fingerprint, settings = _run_fingerprint(self.config)
        if saved["config_sha256"] != fingerprint:
            theirs = saved.get("config") or {}
            changed = [f"{key} {theirs.get(key)!r} -> {value!r}" for key, value in settings.items()
                       if key in theirs and theirs[key] != value]
            raise ValueError(f"--resume: the checkpoint {latest} was written by a run with other settings "
                             f"({', '.join(changed[:4]) or 'changed keys'}); resume with that run's settings, or "
                             "train without --resume to start over")

    def _resume(self, accelerator: Accelerator, checkpoint_dir: Path | None, state: dict) -> dict:
        latest = _latest_checkpoint(checkpoint_dir)
        if latest is None:
            logger.warning("--resume: no checkpoint in %s; starting from scratch", checkpoint_dir)
            return state
        accelerator.load_state(str(latest))
        loaded = json.loads((latest / "trainer_state.json").read_text(encoding="utf-8"))
        logger.info("resumed from %s (epoch %d, step %d)", latest, loaded["epoch"], loaded["global_step"])
        return loaded

    def _save_best(self, accelerator: Accelerator, model, checkpoint_dir: Path | None) -> None:
        unwrapped = accelerator.unwrap_model(model)
        if checkpoint_dir is None:
            self._best_state = {k: v.detach().clone() for k, v in unwrapped.state_dict().items()}
            return
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        temporary = checkpoint_dir / "best.safetensors.tmp"
        save_safetensors_model(unwrapped, str(temporary))
        temporary.replace(checkpoint_dir / "best.safetensors")

    def _load_best(self, model, checkpoint_dir: Path | None) -> None:
        if checkpoint_dir is None:
            if getattr(self, "_best_state", None) is not None:
                model.load_state_dict(self._best_state)
            return
        best = checkpoint_dir / "best.safetensors"
        if best.exists():
            load_safetensors_model(model, str(best))


def _latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    candidates = sorted(p for p in checkpoint_dir.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    return candidates[-1] if candidates else None


def _remove_stale_checkpoints(checkpoint_dir: Path) -> None:
    """A new run (no --resume) starts from an empty checkpoint folder: an earlier run's checkpoints are removed."""
    if not checkpoint_dir.exists():
        return
    logger.info("removing the checkpoints of an earlier run in %s (pass --resume to continue that run)", checkpoint_dir)
    shutil.rmtree(checkpoint_dir)


def _run_fingerprint(config: Config) -> tuple[str, dict]:
    """(sha256, settings): the dotted settings that shape a run (all but RESUME_FREE_KEYS) and their hash."""
    settings = {f"{section}.{key}": value for section, values in config.to_dict().items()
                for key, value in values.items() if f"{section}.{key}" not in RESUME_FREE_KEYS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest(), settings


def _has_labels(window: dict) -> bool:
    """Whether a window has a labelled position (a word): a window of an empty document has none."""
    return any(value != -100 for label in window["labels"] for value in (label if isinstance(label, list) else [label]))


def _improved(score: float, best: float | None, min_delta: float) -> bool:
    """Whether an epoch's selection score beats the best so far; a NaN score never does (and never becomes best)."""
    if math.isnan(score):
        return False
    return best is None or score > best + min_delta


def _selection_score(scores: dict, metric: str) -> float:
    if metric == "macro_f1":
        return scores["macro"]["f1"]
    if metric == "overlap_f1":
        return scores.get("overlap", {}).get("micro", {}).get("f1", scores["micro"]["f1"])
    return scores["micro"][metric]


def _flat(nested: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        else:
            flat[name] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return flat
