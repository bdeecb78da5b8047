"""Length-grouped, seeded batching: windows of similar length share a batch, so dynamic padding wastes little;
under several processes each batch is split between them.

``training.batch_size`` is the global batch: the windows of one optimiser step, whatever the number of
processes. Process r of n trains on ``batch[r::n]`` of every batch, so an epoch has the same batches and the
same number of steps on any number of processes, and (with the loss weighted as ``trainer.union_loss`` does)
each step is the one-process step on the whole batch. A batch with fewer windows than processes (the last one
of an epoch) gives the processes left without a window a *filler*: a window of the batch, trained with weight
0, so that every process takes part in every gradient exchange.
"""

from __future__ import annotations

import random

import torch


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yield batches of indices whose lengths are close; the order is a pure function of (seed, epoch).

    Indices are shuffled, cut into mega-batches of ``50 * batch_size``, each sorted by length and cut into
    batches; the batches are shuffled again. ``set_epoch`` changes the order deterministically, which lets a
    resumed run skip exactly the batches it had already seen.

    Args:
        lengths: each window's length in subwords.
        batch_size: windows per batch (all processes together).
        seed: the order's seed.
        group_by_length: sort mega-batches by length (False: plain shuffled batches).
        num_shards, shard: the processes and this one's index: it yields its share of each batch, a filler
            (``filler(i)``, an index below 0) when the batch has none for it.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool = True,
                 num_shards: int = 1, shard: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard must lie in [0, {num_shards}), got {shard}")
        self.num_shards = num_shards
        self.shard = shard
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

    def shard_batches(self) -> list[list[int]]:
        """This process's share of each batch (a filler where a batch has none for it)."""
        if self.num_shards == 1:
            return self.batches()
        return [batch[self.shard :: self.num_shards] or [filler(batch[0])] for batch in self.batches()]

    def __iter__(self):
        return iter(self.shard_batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def filler(index: int) -> int:
    """The sampler's mark for window ``index`` used as a filler (trained with weight 0): ``-1 - index``."""
    return -1 - index


class ShardData(torch.utils.data.Dataset):
    """The training windows as the sharded sampler indexes them: ``(window, kept)``, kept False for a filler.

    Args:
        data: the windows (or cached-feature windows).
    """

    def __init__(self, data) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[dict, bool]:
        return (self.data[index], True) if index >= 0 else (self.data[filler(index)], False)


class ShardCollate:
    """The task's collate over ``ShardData`` items, plus ``kept``: 1.0, or 0.0 for a filler batch.

    Args:
        collate: the task's collate (windows -> padded tensors).
    """

    def __init__(self, collate) -> None:
        self.collate = collate

    def __call__(self, items: list[tuple[dict, bool]]) -> dict[str, torch.Tensor]:
        batch = self.collate([window for window, _ in items])
        batch["kept"] = torch.tensor(float(all(kept for _, kept in items)))
        return batch
