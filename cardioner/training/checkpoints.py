"""Checkpoints of a training run, in ``<output>.checkpoints/`` beside the export folder.

``step_<global step>_<epochs done>_<step in epoch>/`` holds Accelerate's state (model, optimiser, scheduler,
RNGs) and ``trainer_state.json`` (the loop's ``TrainState`` and the settings of the run, which
``training.resume`` checks); each is written under a temporary name and renamed when complete, and only the
last two are kept. ``best.safetensors`` holds the weights of the best epoch so far. A run without
``training.output`` keeps the best weights in memory and writes no checkpoint.

Under several processes every process saves its part of Accelerate's state (its random states) into the
same temporary folder; the main process alone writes the rest, renames and prunes, and every process waits
until it has, so no process ever reads a checkpoint being written. The folder must be one that every process
sees (one machine, or a shared file system).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model

from cardioner import processes
from cardioner.config import Config, ConfigError

logger = logging.getLogger("cardioner")

# Keys that do not change what a run computes: a resumed run may differ from its checkpoint in these only.
RESUME_FREE_KEYS = ("data.test", "training.output", "training.resume", "training.log_with",
                    "training.checkpoint_steps", "training.feature_cache_dir")
KEPT = 2  # step checkpoints kept (the newest)


@dataclass
class TrainState:
    """Where the training loop is: saved in every checkpoint and restored by ``training.resume``."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # micro-batches done in the current epoch (a resumed run skips them)
    global_step: int = 0  # optimiser steps done
    history: list[dict] = field(default_factory=list)  # one row per completed epoch (losses, dev scores, lrs)
    best_score: float | None = None  # the best selection score so far (dev metric; without dev: -train loss)
    best_epoch: int = 0  # the epoch (1-based) that scored it; its weights are the best ones kept
    bad_epochs: int = 0  # epochs since the best one (early stopping counts them)
    train_seconds: float = 0.0  # time spent in training steps (evaluation and checkpoints excluded)
    train_windows_seen: int = 0  # windows trained on
    epoch_loss_sum: float = 0.0  # the current epoch's micro-batch losses, summed
    epoch_loss_count: int = 0  # and how many there were
    stopped: bool = False  # the run has ended (early stop or max_steps): resuming it trains no further
    stopped_early: bool = False  # it ended by early stopping

    def add_batch(self, windows: int, loss: float) -> None:
        """Count one micro-batch of ``windows`` windows and its loss."""
        self.step_in_epoch += 1
        self.train_windows_seen += windows
        self.epoch_loss_sum += loss
        self.epoch_loss_count += 1

    @property
    def epoch_loss(self) -> float:
        """The mean micro-batch loss of the current epoch so far."""
        return self.epoch_loss_sum / max(self.epoch_loss_count, 1)

    def next_epoch(self) -> None:
        """One more epoch completed: the per-epoch counts start again."""
        self.epoch += 1
        self.step_in_epoch, self.epoch_loss_sum, self.epoch_loss_count = 0, 0.0, 0

    @classmethod
    def from_dict(cls, saved: dict) -> TrainState:
        """The state a ``trainer_state.json`` holds (keys it lacks keep their defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in names})


class Checkpoints:
    """The checkpoint folder of a run (``<training.output>.checkpoints``), or none without an output.

    Args:
        config: the run's Config.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        output = config.training.output
        self.folder = Path(output).parent / (Path(output).name + ".checkpoints") if output else None
        self._best_in_memory: dict[str, torch.Tensor] | None = None

    def latest(self) -> Path | None:
        """The newest complete step checkpoint, if any."""
        if self.folder is None:
            return None
        candidates = sorted(
            p for p in self.folder.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")
        )
        return candidates[-1] if candidates else None

    def check_resumable(self) -> None:
        """Refuse to resume a checkpoint written by a run with other settings (before any work is done)."""
        if self.folder is None:
            raise ConfigError(
                "training.resume needs training.output (checkpoints live next to the output folder)"
            )
        latest = self.latest()
        if latest is None:
            return
        saved = json.loads((latest / "trainer_state.json").read_text(encoding="utf-8"))
        if "config_sha256" not in saved:
            logger.warning("training.resume: %s records no configuration; resuming it unchecked", latest)
            return
        fingerprint, settings = run_fingerprint(self.config)
        if saved["config_sha256"] != fingerprint:
            theirs = saved.get("config") or {}
            changed = [f"{key} {theirs.get(key)!r} -> {value!r}" for key, value in settings.items()
                       if key in theirs and theirs[key] != value]
            raise ConfigError(
                f"training.resume: the checkpoint {latest} was written by a run with other settings "
                f"({', '.join(changed[:4]) or 'changed keys'}); resume with that run's settings, "
                "or train without training.resume to start over"
            )

    def remove_stale(self) -> None:
        """A new run (no resume) starts from an empty checkpoint folder: an earlier run's checkpoints go."""
        if self.folder is None or not self.folder.exists():
            return
        logger.info(
            "removing the checkpoints of an earlier run in %s (set training.resume to continue that run)",
            self.folder,
        )
        shutil.rmtree(self.folder)

    def save(self, accelerator: Accelerator, state: TrainState) -> None:
        """Save Accelerate's state and the loop state; written to a temporary name, then renamed."""
        if self.folder is None:
            return
        final = self.folder / f"step_{state.global_step:08d}_{state.epoch:03d}_{state.step_in_epoch:06d}"
        temporary = self.folder / (final.name + ".tmp")
        if processes.is_main():
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(temporary, ignore_errors=True)
        processes.barrier()
        accelerator.save_state(str(temporary))  # every process: its random states; the main one: the rest
        processes.barrier()
        if processes.is_main():
            # checked on resume; the settings name what differs
            fingerprint, settings = run_fingerprint(self.config)
            saved = {**asdict(state), "config_sha256": fingerprint, "config": settings}
            (temporary / "trainer_state.json").write_text(json.dumps(saved, indent=1), encoding="utf-8")
            shutil.rmtree(final, ignore_errors=True)
            temporary.rename(final)
            for old in sorted(
                p for p in self.folder.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")
            )[:-KEPT]:
                shutil.rmtree(old, ignore_errors=True)
        processes.barrier()

    def load(self, accelerator: Accelerator) -> TrainState:
        """Restore the newest checkpoint into ``accelerator``'s
        objects; its loop state (a fresh one if none)."""
        latest = self.latest()
        if latest is None:
            logger.warning("training.resume: no checkpoint in %s; starting from scratch", self.folder)
            return TrainState()
        accelerator.load_state(str(latest))
        state = TrainState.from_dict(json.loads((latest / "trainer_state.json").read_text(encoding="utf-8")))
        logger.info("resumed from %s (epoch %d, step %d)", latest, state.epoch, state.global_step)
        return state

    def save_best(self, model: torch.nn.Module) -> None:
        """Keep ``model``'s weights (unwrapped) as the best so
        far: on disk, or in memory without an output."""
        if self.folder is None:
            self._best_in_memory = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return
        if processes.is_main():
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary = self.folder / "best.safetensors.tmp"
            save_safetensors_model(model, str(temporary))
            temporary.replace(self.folder / "best.safetensors")
        processes.barrier()

    def load_best(self, model: torch.nn.Module) -> None:
        """Load the best weights kept into ``model`` (unwrapped); nothing when none were kept."""
        if self.folder is None:
            if self._best_in_memory is not None:
                model.load_state_dict(self._best_in_memory)
            return
        best = self.folder / "best.safetensors"
        if best.exists():
            load_safetensors_model(model, str(best))

    def remove(self) -> None:
        """Delete the checkpoints (spent once the export is complete)."""
        if self.folder is not None and processes.is_main():
            shutil.rmtree(self.folder, ignore_errors=True)


def run_fingerprint(config: Config) -> tuple[str, dict]:
    """(sha256, settings): the dotted settings that shape a run (all but RESUME_FREE_KEYS) and their hash."""
    settings = {f"{section}.{key}": value for section, values in config.to_dict().items()
                for key, value in values.items() if f"{section}.{key}" not in RESUME_FREE_KEYS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest(), settings
