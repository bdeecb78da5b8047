"""Length-grouped, seeded batching: windows of similar length
share a batch, so dynamic padding wastes little."""

from __future__ import annotations

import random

import torch


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yield batches of indices whose lengths are close; the order is a pure function of (seed, epoch).

    Indices are shuffled, cut into mega-batches of ``50 * batch_size``, each sorted by length and cut into
    batches; the batches are shuffled again. ``set_epoch`` changes the order deterministically, which lets a
    resumed run skip exactly the batches it had already seen.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if not self.group_by_length:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        mega = 50 * self.batch_size
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: self.lengths[i], reverse=True)
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size
