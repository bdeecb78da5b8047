"""Automatic batch size: on out-of-memory, halve ``training.batch_size`` and train again from scratch.

A thin wrapper around Accelerate's ``find_executable_batch_size``; the training loop itself is unchanged. The
batch size that finally ran is the one in the returned trainer's config (and so in the exported config).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable

from accelerate.utils import find_executable_batch_size

from cardioner.config import Config
from cardioner.data.document import Document
from cardioner.training.trainer import ModelTrainer, TrainResult

logger = logging.getLogger("cardioner")


def train_with_batch_fallback(
    config: Config,
    train_docs: list[Document],
    dev_docs: list[Document] | None = None,
    test_docs: list[Document] | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    trainer_factory: Callable[..., ModelTrainer] = ModelTrainer,
) -> tuple[ModelTrainer, TrainResult]:
    """Train with ``config``; on out-of-memory, halve the batch size and start again (down to 1).

    Args:
        config: the resolved Config; ``training.batch_size`` is the first batch size tried.
        train_docs, dev_docs, test_docs: as for ``ModelTrainer.train``.
        on_epoch_end: passed to the trainer (e.g. a pruning reporter).
        trainer_factory: builds the trainer from ``(config, on_epoch_end=...)``; ModelTrainer by default.

    Returns:
        (trainer, result); ``trainer.config.training.batch_size`` is the batch size that ran.
    """
    current = {"batch_size": config.training.batch_size}

    def halve() -> int:
        smaller = current["batch_size"] // 2
        logger.warning("out of memory with batch size %d; retrying with %d", current["batch_size"], smaller)
        current["batch_size"] = smaller
        return smaller

    options: dict = {"starting_batch_size": config.training.batch_size}
    if "reduce_batch_size_fn" in inspect.signature(find_executable_batch_size).parameters:
        options["reduce_batch_size_fn"] = halve  # older Accelerate versions halve on their own

    @find_executable_batch_size(**options)
    def attempt(batch_size: int) -> tuple[ModelTrainer, TrainResult]:
        current["batch_size"] = batch_size
        trainer = trainer_factory(
            config.replace(**{"training.batch_size": batch_size}), on_epoch_end=on_epoch_end
        )
        return trainer, trainer.train(train_docs, dev_docs, test_docs)

    try:
        return attempt()
    except RuntimeError as error:
        if "No executable batch size found" in str(error):
            raise RuntimeError(
                f"out of memory even with batch size 1 (started at {config.training.batch_size}); "
                "lower data.max_length or use a smaller backbone"
            ) from error
        raise
