"""Optimiser parameter groups (backbone with layer-wise decay, head, CRF), optimisers and schedules.

Schedules come from transformers (linear, cosine, constant) and torch (step, one-cycle); none is hand-written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import torch
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from cardioner.config import CRF_LR_FACTOR, HEAD_LR_FACTOR, TrainingConfig

_LAYER_INDEX = re.compile(r"\.(?:layer|layers|block|blocks)\.(\d+)\.")
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "_norm.weight")


def backbone_depth(name: str, num_layers: int) -> int:
    """Depth of a backbone parameter: 0 for embeddings, i + 1 for transformer layer i, top for the rest."""
    match = _LAYER_INDEX.search(name)
    if match:
        return int(match.group(1)) + 1
    if "embed" in name:
        return 0
    return num_layers + 1


def num_backbone_layers(model: torch.nn.Module) -> int:
    """How many numbered transformer layers the model's backbone has (0 when none are found)."""
    return max(
        [int(m.group(1)) + 1 for n, _ in model.named_parameters()
         if part_of(n) == "backbone" and (m := _LAYER_INDEX.search(n))],
        default=0,
    )


def part_of(name: str) -> str:
    """Which part of a cardioner model a parameter belongs to: backbone, crf or head."""
    if name.startswith("backbone."):
        return "backbone"
    if name.startswith("crf.") or ".crf." in name:
        return "crf"
    return "head"


def parameter_groups(model: torch.nn.Module, config: TrainingConfig) -> list[dict]:
    """Optimiser groups: backbone by depth (layer decay), head and CRF each with their own learning rate.

    Frozen parameters (requires_grad False) are included with their group so that unfreezing later only flips
    requires_grad; the optimiser skips parameters without gradients.

    Returns:
        A list of dicts with params, lr, weight_decay and a human-readable ``name``.
    """
    head_lr = config.head_lr if config.head_lr is not None else config.lr * HEAD_LR_FACTOR
    crf_lr = config.crf_lr if config.crf_lr is not None else config.lr * CRF_LR_FACTOR
    named = list(model.named_parameters())
    num_layers = num_backbone_layers(model)
    groups: dict[tuple[str, bool], dict] = {}
    for name, param in named:
        part = part_of(name)
        decay = not any(name.endswith(suffix) for suffix in _NO_DECAY) and param.ndim > 1
        if part == "backbone":
            depth = backbone_depth(name, num_layers)
            lr = config.lr * config.layer_decay ** (num_layers + 1 - depth)
            key = (f"backbone.depth{depth:02d}", decay)
        else:
            lr = head_lr if part == "head" else crf_lr
            key = (part, decay)
            if part == "crf":
                decay = False
        group = groups.setdefault(
            key,
            {"params": [], "lr": lr, "weight_decay": config.weight_decay if decay else 0.0,
             "name": key[0] + ("" if decay else ".no_decay")},
        )
        group["params"].append(param)
    return list(groups.values())


def build_optimizer(groups: Iterable[dict], config: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW (default), Adam or SGD with momentum over the given parameter groups."""
    groups = list(groups)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; expected adamw, adam or sgd")


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainingConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule, all with linear warm-up over ``warmup_ratio`` of the steps."""
    warmup = int(math.ceil(config.warmup_ratio * total_steps))
    if config.scheduler == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    if config.scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    if config.scheduler == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    if config.scheduler == "step":
        decay = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=max(1, config.step_size_epochs * steps_per_epoch), gamma=config.step_gamma
        )
        if warmup == 0:
            return decay
        ramp = torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup
        )
        return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, decay], milestones=[warmup])
    if config.scheduler == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=max(total_steps, 1),
            pct_start=max(config.warmup_ratio, 1e-3),
            anneal_strategy="cos",
            cycle_momentum=config.optimizer == "sgd",
        )
    raise ValueError(f"unknown scheduler {config.scheduler!r}")


def describe_groups(optimizer: torch.optim.Optimizer) -> list[dict]:
    """One row per group: name, current and base learning rate,
    number of parameters and how many are trainable."""
    rows = []
    for group in optimizer.param_groups:
        params = group["params"]
        rows.append({
            "name": group.get("name", "?"),
            "lr": group["lr"],
            "base_lr": group.get("initial_lr", group["lr"]),  # before the schedule (layer decay shows here)
            "params": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
        })
    return rows
