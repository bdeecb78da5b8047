"""Length-grouped batches, and their shares under several processes: every window once per epoch, each batch
split between the processes, a weight-0 filler for a process a small batch leaves without a window."""

from __future__ import annotations

import pytest
import torch

from cardioner.training.sampling import LengthGroupedBatchSampler, ShardCollate, ShardData, filler

LENGTHS = [5, 17, 9, 30, 12, 8, 21, 3, 14, 26, 11]  # 11 windows: batches of 4 end with one of 3


@pytest.mark.parametrize("num_shards", [2, 3, 4])
def test_the_shards_of_each_batch_split_it_and_every_window_is_seen_once_per_epoch(num_shards):
    whole = LengthGroupedBatchSampler(LENGTHS, 4, seed=5)
    shards = [LengthGroupedBatchSampler(LENGTHS, 4, seed=5, num_shards=num_shards, shard=r)
              for r in range(num_shards)]
    for epoch in (0, 1):
        for sampler in (whole, *shards):
            sampler.set_epoch(epoch)
        batches = whole.batches()
        shares = [list(sampler) for sampler in shards]
        assert all(len(share) == len(batches) == len(whole) for share in shares)  # same steps everywhere
        for step, batch in enumerate(batches):
            parts = [share[step] for share in shares]
            kept = [index for part in parts for index in part if index >= 0]
            assert sorted(kept) == sorted(batch)  # the batch, split: nothing twice, nothing left out
            for part in parts:  # a process the batch has no window for gets one filler
                assert part == [index for index in part if index >= 0] or part == [filler(batch[0])]


def test_a_filler_is_a_real_window_collated_with_kept_zero():
    windows = [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}]

    def collate(items):
        return {"input_ids": torch.nn.utils.rnn.pad_sequence([torch.tensor(w["input_ids"]) for w in items],
                                                              batch_first=True)}

    data, batcher = ShardData(windows), ShardCollate(collate)
    kept = batcher([data[0], data[1]])
    dropped = batcher([data[filler(1)]])
    assert kept["kept"].item() == 1.0 and kept["input_ids"].shape == (2, 3)
    assert dropped["kept"].item() == 0.0 and dropped["input_ids"].tolist() == [[4, 5]]


def test_a_shard_outside_the_processes_is_refused():
    with pytest.raises(ValueError, match=r"shard must lie in \[0, 2\), got 2"):
        LengthGroupedBatchSampler(LENGTHS, 4, seed=5, num_shards=2, shard=2)
