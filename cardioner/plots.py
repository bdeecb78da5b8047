"""Figures a person would rather look at than read: learning curves and comparisons, written as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_learning_curves(history: list[dict], path: str | Path, title: str = "Learning curves") -> Path:
    """Training loss and dev span F1 per epoch, side by side.

    Args:
        history: one dict per epoch with ``epoch``, ``train_loss`` and optionally ``dev_loss``, ``dev_f1``.
        path: the PNG to write.
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
        best = max(history, key=lambda row: row.get("dev_f1") or -1.0)
        ax_f1.axvline(best["epoch"], color="grey", linestyle="--", label=f"best epoch {best['epoch']}")
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("micro F1 (exact spans)")
    ax_f1.set_ylim(0, 1)
    ax_f1.set_title("Dev F1")
    ax_f1.legend()
    ax_f1.grid(alpha=0.3)
    for ax in (ax_loss, ax_f1):
        ax.set_xticks(epochs)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
