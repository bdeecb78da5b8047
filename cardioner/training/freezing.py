"""Freezing strategies: a frozen backbone, freeze-then-unfreeze, and gradual unfreezing from the top.

Every strategy is one schedule of stages ``(epochs completed, top backbone layers that train)``:

- ``model.freeze_backbone``: the backbone never trains (no stages; the head and CRF train throughout);
- ``training.unfreeze_at_epoch: N``: one stage ``(N, all)`` — head only for N epochs, then everything;
- ``training.gradual_unfreezing: "1:2,2:4,3:all"``: the top 2 layers join after 1 epoch, the top 4 after 2,
  everything (embeddings included) after 3.

Learning rates come from the optimiser's parameter groups (``training.lr`` with ``layer_decay`` per depth,
``head_lr``, ``crf_lr``): frozen parameters stay in their groups, and unfreezing only flips ``requires_grad``.
Frozen parts of the backbone run in eval mode (no dropout): they act as a fixed feature extractor, so a frozen
backbone gives the same features whether they are cached or computed every step.
"""

from __future__ import annotations

import torch

from cardioner.config import Config, parse_unfreezing
from cardioner.training.optim import backbone_depth, num_backbone_layers, part_of

ALL_LAYERS = None  # a stage's layer count meaning "the whole backbone, embeddings included"


def unfreezing_stages(config: Config) -> list[tuple[int, int | None]]:
    """The (epochs completed, top layers training) stages of the config; [] when no schedule is set."""
    training = config.training
    if training.gradual_unfreezing:
        return parse_unfreezing(training.gradual_unfreezing)
    if training.unfreeze_at_epoch:
        return [(training.unfreeze_at_epoch, ALL_LAYERS)]
    return []


def trainable_layers(config: Config, epoch: int) -> int | None:
    """How many top backbone layers train in ``epoch`` (0-based): 0 = frozen, None = all.

    With no schedule: 0 when ``model.freeze_backbone``, else all.
    """
    stages = unfreezing_stages(config)
    if not stages:
        return 0 if config.model.freeze_backbone else ALL_LAYERS
    layers: int | None = 0
    for start, count in stages:
        if epoch >= start:
            layers = count
    return layers


def set_trainable_layers(model: torch.nn.Module, top_layers: int | None) -> None:
    """Let the top ``top_layers`` backbone layers train (None: all, embeddings included; 0: none).

    A backbone parameter of depth d (0 embeddings, i + 1 for layer i, L + 1 above the last layer) trains when
    d > L - top_layers. Fully frozen backbone modules are put in eval mode; head and CRF are not touched.
    """
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    num_layers = num_backbone_layers(model)
    for name, param in model.named_parameters():
        if part_of(name) == "backbone":
            depth = backbone_depth(name, num_layers)
            param.requires_grad_(
                top_layers is ALL_LAYERS or (top_layers > 0 and depth > num_layers - top_layers)
            )
    _eval_frozen(model.backbone)


def apply_freezing(model: torch.nn.Module, config: Config, epoch: int) -> None:
    """Set which backbone parameters train in ``epoch`` (0-based); called at the start of every epoch."""
    layers = trainable_layers(config, epoch)
    if layers is ALL_LAYERS and not unfreezing_stages(config):
        return  # plain fine-tuning: nothing to do
    set_trainable_layers(model, layers)


def _eval_frozen(module: torch.nn.Module) -> None:
    """Eval mode for the largest sub-modules whose parameters are all frozen (their dropout switches off)."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        module.eval()
        return
    for child in module.children():
        _eval_frozen(child)


def describe_trainable(groups: list[dict]) -> str:
    """One log line from ``describe_groups`` rows: trainable
    groups with their learning rates, then frozen ones.

    Decay and no-decay halves of a group are shown once, and consecutive backbone depths as one range (with
    the range of their rates under layer-wise decay); e.g. ``trainable: backbone.depth06-11 (lr 3e-05..5e-05,
    now 0), head (lr 0.0005, now 0); frozen: backbone.depth00-05``.
    """
    merged: dict[str, dict] = {}
    for row in groups:
        name = row["name"].removesuffix(".no_decay")
        entry = merged.setdefault(name, {"base_lr": row["base_lr"], "lr": row["lr"], "trainable": 0})
        entry["trainable"] += row["trainable"]
    trainable = [name for name, entry in merged.items() if entry["trainable"]]
    shown = []
    for names in _runs(trainable):
        rates = [f"{_span([merged[name][key] for name in names])}" for key in ("base_lr", "lr")]
        shown.append(f"{_ranges(names)[0]} (lr {rates[0]}, now {rates[1]})")
    frozen = _ranges([name for name, entry in merged.items() if not entry["trainable"]])
    return f"trainable: {', '.join(shown) or 'none'}; frozen: {', '.join(frozen) or 'none'}"


def _runs(names: list[str]) -> list[list[str]]:
    """Names in runs: consecutive backbone depths together, every other name alone."""
    runs: list[list[str]] = []
    for name in names:
        if runs and name.startswith("backbone.depth") and runs[-1][-1].startswith("backbone.depth") and int(
                name.removeprefix("backbone.depth")) == int(runs[-1][-1].removeprefix("backbone.depth")) + 1:
            runs[-1].append(name)
        else:
            runs.append([name])
    return runs


def _span(values: list[float]) -> str:
    """``5e-05``, or ``1e-05..5e-05`` when the values differ."""
    low, high = min(values), max(values)
    return f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g}..{high:.3g}"


def _ranges(names: list[str]) -> list[str]:
    """["backbone.depth00", "backbone.depth01", "backbone.depth02"] -> ["backbone.depth00-02"]."""
    depths = sorted(int(n.removeprefix("backbone.depth")) for n in names if n.startswith("backbone.depth"))
    others = [n for n in names if not n.startswith("backbone.depth")]
    spans: list[list[int]] = []
    for depth in depths:
        if spans and depth == spans[-1][1] + 1:
            spans[-1][1] = depth
        else:
            spans.append([depth, depth])
    return [f"backbone.depth{a:02d}" + (f"-{b:02d}" if b > a else "") for a, b in spans] + others
