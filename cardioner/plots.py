"""Figures a person would rather look at than read: learning curves and comparisons, written as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_curves(history: list[dict], path: str | Path, title: str = "Learning curves",
                         best_epoch: int | None = None) -> Path:
    """Training loss and dev span F1 per epoch, side by side.

    Args:
        history: one dict per epoch with ``epoch``, ``train_loss`` and optionally ``dev_loss``, ``dev_f1``.
        path: the PNG to write.
        best_epoch: the epoch the trainer selected (by ``training.metric`` and ``min_delta``), marked with a
            dashed line; None = the epoch with the highest dev micro F1.
    """
    path = Path(path)
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [row.get("train_loss") for row in history], marker="o", label="train loss")
    if any(row.get("dev_loss") is not None for row in history):
        ax_loss.plot(epochs, [row.get("dev_loss") for row in history], marker="s", label="dev loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    if any(row.get("dev_f1") is not None for row in history):
        ax_f1.plot(epochs, [row.get("dev_f1") for row in history], marker="o", color="tab:green", label="dev span F1")
        if not best_epoch:
            best_epoch = max(history, key=lambda row: row.get("dev_f1") or -1.0)["epoch"]
        ax_f1.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("micro F1 (exact spans)")
    ax_f1.set_ylim(0, 1)
    ax_f1.set_title("Dev F1")
    ax_f1.legend()
    ax_f1.grid(alpha=0.3)
    for ax in (ax_loss, ax_f1):
        ax.set_xticks(epochs)
    return _save(fig, path, title)


def plot_comparison(rows: list[dict], path: str | Path, title: str = "Token heads compared") -> Path:
    """Micro F1 of each run (one bar per row, coloured by CRF) beside F1 against inference speed.

    Args:
        rows: comparison rows (``cardioner.compare.export_row``): name, head, use_crf, micro_f1, scored_on,
            inference_tokens_per_second.
        path: the PNG to write.
    """
    path = Path(path)
    settings = sorted({row["use_crf"] for row in rows})
    fig, (ax_bars, ax_speed) = plt.subplots(1, 2, figsize=(max(13.0, 8.0 + 0.5 * len(rows)), 4.8))
    # one bar per run (two exports of one head, e.g. from different folders, are two bars), coloured by CRF
    colours = {False: "tab:blue", True: "tab:orange"}
    for use_crf in settings:
        chosen = [(index, row) for index, row in enumerate(rows) if row["use_crf"] == use_crf]
        bars = ax_bars.bar([index for index, _ in chosen], [row.get("micro_f1") or 0.0 for _, row in chosen], 0.7,
                           color=colours[bool(use_crf)], label="with CRF" if use_crf else "softmax")
        ax_bars.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax_bars.set_xticks(range(len(rows)), [row["name"] for row in rows], rotation=20, ha="right")
    ax_bars.set_xlabel("run")
    scored = " / ".join(sorted({row.get("scored_on") or "test" for row in rows}))
    ax_bars.set_ylabel(f"micro F1 ({scored}, exact spans)")
    ax_bars.set_ylim(0, 1.15)
    ax_bars.set_title("Span F1 per run")
    ax_bars.legend(loc="upper right", ncols=2)
    ax_bars.grid(axis="y", alpha=0.3)
    for use_crf in settings:
        chosen = [row for row in rows if row["use_crf"] == use_crf and row.get("inference_tokens_per_second")]
        ax_speed.scatter([row["inference_tokens_per_second"] for row in chosen],
                         [row.get("micro_f1") or 0.0 for row in chosen], marker="s" if use_crf else "o", s=50,
                         label="with CRF" if use_crf else "softmax")
        for row in chosen:
            ax_speed.annotate(row["name"], (row["inference_tokens_per_second"], row.get("micro_f1") or 0.0),
                              textcoords="offset points", xytext=(4, 4 if use_crf else -10), fontsize=8)
    ax_speed.set_xscale("log")
    ax_speed.set_xlabel("inference speed (tokens per second, log scale)")
    ax_speed.set_ylabel(f"micro F1 ({scored})")
    ax_speed.set_title("F1 against inference speed")
    ax_speed.grid(alpha=0.3)
    if ax_speed.collections:
        ax_speed.legend(loc="lower right")
    return _save(fig, path, title)


def plot_systems_per_type(per_system: dict[str, dict[str, float]], path: str | Path,
                          title: str = "Per-type F1 by system", ylabel: str = "F1",
                          errors: dict[str, dict[str, float]] | None = None) -> Path:
    """Grouped bars: one group per entity type, one bar per system (e.g. multi-label against flat models).

    Args:
        per_system: {system name: {entity type: score}}; a type a system lacks is drawn as 0.
        path: the PNG to write.
        errors: optional {system name: {entity type: half-length}} drawn as error bars (e.g. the standard
            deviation over seeds when ``per_system`` holds means).
    """
    path = Path(path)
    if not per_system:
        raise ValueError("no systems to plot")
    types = list(dict.fromkeys(t for scores in per_system.values() for t in scores))
    width = 0.8 / len(per_system)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(types) + 2), 4.5))
    top = max([value for scores in per_system.values() for value in scores.values()] + [1e-9])
    for offset, (name, scores) in enumerate(per_system.items()):
        positions = [index + (offset - (len(per_system) - 1) / 2) * width for index in range(len(types))]
        spread = (errors or {}).get(name)
        bars = ax.bar(positions, [scores.get(t, 0.0) for t in types], width, label=name,
                      yerr=[spread.get(t, 0.0) for t in types] if spread else None, capsize=3 if spread else 0)
        ax.bar_label(bars, fmt="%.1f" if top > 1 else "%.3f", fontsize=7, padding=2)
    ax.set_xticks(range(len(types)), types)
    ax.set_xlabel("entity type")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, top * 1.25)
    ax.legend(loc="upper left", fontsize=8, ncols=min(len(per_system), 3))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, title)


def _save(fig, path: Path, title: str) -> Path:
    """Title, tighten, write as PNG (120 dpi) and close a figure."""
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
