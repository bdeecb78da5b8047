"""Cached backbone features: with a frozen backbone, run it once per window and train the head on the cache.

``cached_training_data`` returns a dataset and a collate function for the trainer's DataLoader: each batch is
the usual padded batch plus ``hidden_states`` (what ``model.backbone_features`` returns, padded with zeros),
which ``model(**batch)`` uses instead of running the backbone. Words and labels still come from the windows.

The cache lives in memory, or in ``feature_cache_dir`` as ``features-<key>.safetensors`` (read back
memory-mapped, one window slice at a time). The key hashes everything the features depend on: the windows'
token ids (so the data, the tokenizer, the window size and stride), the backbone's config and weights, and
the feature settings of the model (``num_layers_to_use``). Labels are not part of it: features do not depend
on them, and a batch takes its labels from the current windows.

Features are computed with the backbone in eval mode (no dropout), as frozen training runs it uncached
(``training/freezing.py``), so cached and uncached training give the same head.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cardioner.values import counted

logger = logging.getLogger("cardioner")

CACHE_FORMAT = 1  # bump when the stored layout changes: old files are then simply not found
FEATURE_SETTINGS = ("num_layers_to_use",)  # model config keys that change what backbone_features returns


def uses_cached_features(config) -> bool:
    """Whether training runs on cached features: a backbone frozen for the whole run and caching on."""
    return bool(config.model.freeze_backbone and config.training.cache_features)


def feature_cache_key(model: torch.nn.Module, windows: Sequence[dict]) -> str:
    """A hash of what the features depend on: token ids, backbone config and weights, feature settings.

    Args:
        model: a cardioner model (``backbone`` and ``config``).
        windows: the encoded windows (``input_ids``, ``attention_mask``, optional ``token_type_ids``).

    Returns:
        24 hex characters.
    """
    digest = hashlib.sha256()
    settings = {name: getattr(model.config, name, None) for name in FEATURE_SETTINGS}
    digest.update(
        json.dumps(
            {"format": CACHE_FORMAT, "settings": settings, "backbone": model.backbone.config.to_dict()},
            sort_keys=True,
            default=str,
        ).encode()
    )
    for name, tensor in sorted(model.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    for window in windows:
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key in window:
                digest.update(np.asarray(window[key], dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:24]


@torch.no_grad()
def compute_features(
    model: torch.nn.Module,
    windows: Sequence[dict],
    collate: Callable[[list[dict]], dict[str, torch.Tensor]],
    batch_size: int = 32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the backbone once over every window (eval mode, batches of similar length).

    Returns:
        (features (total_tokens, *feature_shape) float on CPU, the windows' rows concatenated without padding;
        offsets (num_windows + 1,) long: window i is ``features[offsets[i]:offsets[i + 1]]``).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    lengths = [len(window["input_ids"]) for window in windows]
    order = sorted(range(len(windows)), key=lambda i: lengths[i])
    rows: list[torch.Tensor | None] = [None] * len(windows)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate([windows[i] for i in chunk])
        hidden = model.backbone_features(
            batch["input_ids"].to(device), batch["attention_mask"].to(device),
            batch["token_type_ids"].to(device) if "token_type_ids" in batch else None,
        )  # shape: (chunk, seq_len, *feature_shape)
        for row, index in zip(hidden.float().cpu(), chunk, strict=True):
            rows[index] = row[: lengths[index]].clone()
    model.train(was_training)
    offsets = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.long)  # shape: (num_windows + 1,)
    return torch.cat(rows), offsets  # shape: (total_tokens, *feature_shape)


class FeatureDataset(torch.utils.data.Dataset):
    """Windows with their cached features under ``hidden_states`` ((seq_len, *feature_shape) per window).

    Args:
        windows: the encoded windows.
        features: a tensor (total_tokens, ...) or an open safetensors file holding ``features``.
        offsets: (num_windows + 1,) window boundaries in ``features``.
    """

    def __init__(self, windows: Sequence[dict], features, offsets: torch.Tensor) -> None:
        if len(offsets) != len(windows) + 1:
            raise ValueError(f"{counted(len(offsets) - 1, 'cached window')} for "
                             f"{counted(len(windows), 'window')}")
        self.windows = windows
        self.file = None if isinstance(features, torch.Tensor) else features  # kept open while in use
        self.features = features if self.file is None else self.file.get_slice("features")
        self.offsets = offsets.tolist()

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        start, end = self.offsets[index], self.offsets[index + 1]
        return {**self.windows[index], "hidden_states": self.features[start:end]}


class FeatureCollate:
    """The task's collate plus ``hidden_states`` padded with zeros to the batch's length.

    Args:
        collate: the task's collate (windows -> padded tensors).
    """

    def __init__(self, collate: Callable[[list[dict]], dict[str, torch.Tensor]]) -> None:
        self.collate = collate

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.collate([{k: v for k, v in item.items() if k != "hidden_states"} for item in items])
        batch_size, seq_len = batch["input_ids"].shape
        first = items[0]["hidden_states"]
        hidden = torch.zeros(batch_size, seq_len, *first.shape[1:], dtype=first.dtype)  # shape: (b, seq, ...)
        for row, item in enumerate(items):
            hidden[row, : len(item["hidden_states"])] = item["hidden_states"]
        batch["hidden_states"] = hidden
        return batch


def cached_training_data(
    model: torch.nn.Module,
    windows: Sequence[dict],
    collate: Callable[[list[dict]], dict[str, torch.Tensor]],
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    device: torch.device | str | None = None,
) -> tuple[FeatureDataset, FeatureCollate]:
    """The training windows with cached backbone features, and the collate function that batches them.

    Args:
        model: the model whose (frozen) backbone computes the features.
        windows: the training windows.
        collate: the task's collate.
        cache_dir: folder of ``features-<key>.safetensors`` files (reused when the key matches); None: memory.
        batch_size: windows per backbone batch while computing.
        device: where the backbone runs (default: the model's device).

    Returns:
        (dataset for the DataLoader, collate function).
    """
    started = time.perf_counter()
    if cache_dir is None:
        features, offsets = compute_features(model, windows, collate, batch_size, device)
        logger.info("cached backbone features of %s in memory (%.1f MB, %.1f s)",
                    counted(len(windows), "window"), features.numel() * features.element_size() / 2**20,
                    time.perf_counter() - started)
        return FeatureDataset(windows, features, offsets), FeatureCollate(collate)
    path = Path(cache_dir) / f"features-{feature_cache_key(model, windows)}.safetensors"
    if path.is_file():
        logger.info("reusing cached backbone features %s", path)
    else:
        features, offsets = compute_features(model, windows, collate, batch_size, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file({"features": features, "offsets": offsets}, str(temporary),
                  metadata={"windows": str(len(windows)), "format": str(CACHE_FORMAT)})
        temporary.replace(path)
        logger.info("cached backbone features of %s in %s (%.1f MB, %.1f s)",
                    counted(len(windows), "window"), path, path.stat().st_size / 2**20,
                    time.perf_counter() - started)
    handle = safe_open(str(path), framework="pt")  # memory-mapped: slices are read on demand
    return FeatureDataset(windows, handle, handle.get_tensor("offsets")), FeatureCollate(collate)
