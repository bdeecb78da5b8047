"""Figures a person would rather look at than read, written as PNG: learning curves, head comparisons,
per-type scores, span confusion and word projections (error analysis)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cardioner.labels import OUTSIDE  # noqa: E402
from cardioner.values import counted  # noqa: E402


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
        ax_f1.plot(
            epochs, [row.get("dev_f1") for row in history], marker="o", color="tab:green", label="dev span F1"
        )
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
    return save_figure(fig, path, title)


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
        bars = ax_bars.bar(
            [index for index, _ in chosen],
            [row.get("micro_f1") or 0.0 for _, row in chosen],
            0.7,
            color=colours[bool(use_crf)],
            label="with CRF" if use_crf else "softmax",
        )
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
    return save_figure(fig, path, title)


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
        bars = ax.bar(
            positions,
            [scores.get(t, 0.0) for t in types],
            width,
            label=name,
            yerr=[spread.get(t, 0.0) for t in types] if spread else None,
            capsize=3 if spread else 0,
        )
        ax.bar_label(bars, fmt="%.1f" if top > 1 else "%.3f", fontsize=7, padding=2)
    ax.set_xticks(range(len(types)), types)
    ax.set_xlabel("entity type")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, top * 1.25)
    ax.legend(loc="upper left", fontsize=8, ncols=min(len(per_system), 3))
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, title)


def plot_per_type(scores: dict, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG bar chart of per-type F1 (support in the tick
    labels, micro F1 as a line); returns the path."""
    per_type = scores["per_type"]
    if not per_type:
        raise ValueError("no entity types to plot: scores['per_type'] is empty")
    labels = list(per_type)
    f1 = [per_type[label]["f1"] for label in labels]
    figure = Figure(figsize=(max(4.0, 0.8 * len(labels) + 2), 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bars = axes.bar(range(len(labels)), f1, color="tab:blue")
    axes.bar_label(bars, labels=[f"{v:.3f}" for v in f1], fontsize=8)
    axes.axhline(
        scores["micro"]["f1"], color="tab:red", linestyle="--", label=f"micro F1 {scores['micro']['f1']:.3f}"
    )
    axes.set_xticks(range(len(labels)), [f"{label}\n(n={per_type[label]['support']})" for label in labels])
    axes.set_ylim(0, 1.2)  # headroom for the bar labels and the legend
    axes.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    axes.set_xlabel("entity type (gold support)")
    axes.set_ylabel("F1")
    if title is None:
        view = (
            f"{scores['match']} match"
            if "match" in scores
            else f"seqeval {scores.get('mode', '')} {scores.get('scheme', '')}"
        )
        title = f"Per-type F1 ({view.strip()})"
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def plot_projection(points: np.ndarray, types: list[str], path: Path, title: str, axis: str,
                    variance: list[float] | None = None) -> Path:
    """A 2-D scatter of word points coloured by gold type (O in light grey, drawn first)."""
    fig, ax = plt.subplots(figsize=(8, 6.5))
    counts = Counter(types)
    order = [OUTSIDE] + sorted(t for t in counts if t != OUTSIDE) if OUTSIDE in counts else sorted(counts)
    colours = plt.get_cmap("tab10" if len(order) <= 11 else "tab20")
    entity_index = 0
    for entity_type in order:
        mask = np.array([t == entity_type for t in types])
        if entity_type == OUTSIDE:
            style = {"color": "lightgrey", "s": 8, "alpha": 0.5}
        else:
            style = {"color": colours(entity_index % colours.N), "s": 14, "alpha": 0.8}
            entity_index += 1
        ax.scatter(points[mask, 0], points[mask, 1], label=f"{entity_type} ({counts[entity_type]})",
                   edgecolors="none", **style)
    labels = [f"{axis} 1", f"{axis} 2"]
    if variance is not None:
        labels = [f"{label} ({share:.1%} of variance)" for label, share in zip(labels, variance, strict=True)]
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title)
    ax.legend(title="gold type (words)", loc="best", markerscale=2, fontsize=9)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_confusion(matrix: dict, path: Path, title: str) -> Path:
    """The confusion matrix as an annotated heat map (counts; colour by share of the row)."""
    counts = np.array(matrix["counts"])
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(4.5, 1.1 * len(matrix["predicted"]) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(matrix["predicted"])), matrix["predicted"], rotation=45, ha="right")
    ax.set_yticks(range(len(matrix["gold"])), matrix["gold"])
    for (row, col), value in np.ndenumerate(counts):
        if value or (row < len(matrix["gold"]) - 1 and col < len(matrix["predicted"]) - 1):
            ax.text(col, row, str(value), ha="center", va="center",
                    color="white" if shares[row, col] > 0.6 else "black", fontsize=10)
    ax.set_xlabel("predicted type (\"missed\": no overlapping prediction)")
    ax.set_ylabel("gold type (\"spurious\": no overlapping gold span)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the gold row")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reliability(result: dict, path: str | Path, title: str = "Reliability of span confidences") -> Path:
    """A reliability diagram of ``calibration``'s result as PNG: accuracy per confidence bin against the
    diagonal (perfect calibration), the gap shaded, ECE in the legend; below, how many spans each bin
    holds."""
    path = Path(path)
    bins = result["bins"]
    width = 1.0 / result["num_bins"]
    centres = [(row["low"] + row["high"]) / 2 for row in bins]
    filled = [row for row in bins if row["spans"]]
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5.2, 6.2), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.bar([(row["low"] + row["high"]) / 2 for row in filled], [row["accuracy"] for row in filled],
           width=width * 0.95, color="tab:blue", alpha=0.8, edgecolor="white",
           label="accuracy of the bin's spans")
    for row in filled:
        low, high = sorted((row["accuracy"], row["confidence"]))
        ax.bar((row["low"] + row["high"]) / 2, high - low, bottom=low, width=width * 0.95, fill=False,
               edgecolor="tab:red", hatch="//", linewidth=0.8)
    ax.plot([(row["low"] + row["high"]) / 2 for row in filled], [row["confidence"] for row in filled],
            marker="o", color="tab:orange", linewidth=1, markersize=3,
            label="mean confidence of the bin (hatched: the gap)")
    ece = result.get("ece")
    title_line = (f"ECE {ece:.3f}, {counted(result['spans'], 'predicted span')}" if ece is not None
                  else "no scored spans")
    ax.set_title(title_line, fontsize=9)
    ax.set_ylabel("fraction correct (exact match)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(alpha=0.3)
    ax_count.bar(centres, [row["spans"] for row in bins], width=width * 0.95, color="tab:grey")
    ax_count.set_xlabel("span confidence")
    ax_count.set_ylabel("spans")
    ax_count.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, title)


def save_figure(fig, path: str | Path, title: str | None = None) -> Path:
    """Title (if given), tighten, write as PNG (120 dpi) and close a figure."""
    path = Path(path)
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
