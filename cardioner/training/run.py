"""One library call behind ``cardioner train``: read the corpora, train, export."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from cardioner.backbone import check_backbone
from cardioner.config import Config, ConfigError
from cardioner.data.document import CorpusError, Document
from cardioner.data.io import read_corpus
from cardioner.export import check_export_target
from cardioner.training.batch_size import train_with_batch_fallback
from cardioner.training.trainer import TrainResult, check_tracker

logger = logging.getLogger("cardioner")


def read_split(path: str | None, config: Config, name: str) -> list[Document] | None:
    """Read one corpus split (or None when no path is given), reporting what was skipped or repaired; a flat
    task that refuses overlapping training spans (data.overlaps: error) has the reader name their file and
    line."""
    if path is None:
        return None
    flat = name == "train" and not config.data.multilabel and config.data.overlaps == "error"
    docs, report = read_corpus(path, format=config.data.format, flat=flat,
                               span_errors=config.data.span_errors)
    logger.info("%s: %s", name, report.summary().replace("\n", "; "))
    if not docs:
        raise CorpusError(f"the {name} corpus holds no documents", path)
    return docs


def split_dev(docs: list[Document], fraction: float, seed: int) -> tuple[list[Document], list[Document]]:
    """Carve a dev set from training documents (by document, seeded)."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_dev = max(1, round(fraction * len(docs)))
    dev_ids = set(order[:n_dev])
    return [d for i, d in enumerate(docs) if i not in dev_ids], [
        d for i, d in enumerate(docs) if i in dev_ids
    ]


def check_before_reading(config: Config, exports: list[str | Path] = ()) -> None:
    """The checks that need no corpus, made before any is read: a training
    corpus is named, the backbone loads and takes the window size, each
    folder in ``exports`` may be written (new, empty or an earlier export),
    and a tracker (training.log_with) has its package and a place to write."""
    if not config.data.train:
        raise ConfigError("data.train is not set: no training corpus")
    for folder in exports:
        check_export_target(folder)
    check_tracker(config)
    check_backbone(config)


def run_training(config: Config) -> tuple[TrainResult, Path | None]:
    """Read train/dev/test as the config says, train, and export to ``training.output``.

    Returns:
        (TrainResult, export path or None when no output was given).
    """
    check_before_reading(config, [config.training.output] if config.training.output else [])
    train = read_split(config.data.train, config, "train")
    dev = read_split(config.data.dev, config, "dev")
    test = read_split(config.data.test, config, "test")
    if dev is None and config.data.dev_fraction > 0:
        train, dev = split_dev(train, config.data.dev_fraction, config.training.seed)
    trainer, result = train_with_batch_fallback(config, train, dev, test)  # halves the batch size on OOM
    path = trainer.save(config.training.output) if config.training.output else None
    return result, path
