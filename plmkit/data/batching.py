"""Dynamic padding and length-bucketed batches, deterministic per (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class EpochDataset(Dataset):
    """Items are (epoch, index, feature): collate functions that draw random numbers
    (dynamic masking) seed them from (seed, epoch, index), so any worker or process
    reproduces the same batch."""

    def __init__(self, features: Sequence[dict[str, Any]]):
        self.features = features
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[int, int, dict[str, Any]]:
        return self.epoch, i, self.features[i]


class BucketBatchSampler(Sampler[list[int]]):
    """Shuffle, sort by length inside windows of batch_size * bucket_size, cut into
    batches, shuffle the batches. Similar lengths share a batch, so padding is small.

    Iterating gives the epoch's batches from `start` on (a resumed run sets it to the batches already
    consumed). The size is kept as `size`, not `batch_size`: Accelerate's sharding across processes reads
    a `batch_size` attribute as a promise that every batch has it, and drops a round of batches wherever the
    short one (the end of the last window) lands at its last process."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, bucket_size: int = 50, shuffle: bool = True):
        # an array: a corpus of millions of examples costs 8 bytes each here, and as much again for an epoch's order
        self.lengths, self.size, self.seed = np.asarray(lengths, dtype=np.int64).reshape(-1), batch_size, seed
        self.bucket_size, self.shuffle, self.epoch, self.start = bucket_size, shuffle, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        return [batch.tolist() for batch in self._batches()]

    def _batches(self) -> list[np.ndarray]:
        """The epoch's batches as arrays of indices (views of one sorted window each): sorting is stable, so
        they are what sorting Python lists by length gave."""
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.size] for i in range(0, n, self.size)]
        gen = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        order = torch.randperm(n, generator=gen).numpy()
        window = self.size * max(1, self.bucket_size)
        batches = []
        for start in range(0, n, window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.size] for i in range(0, len(chunk), self.size)]
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in perm]

    def __iter__(self) -> Iterator[list[int]]:
        return (batch.tolist() for batch in self._batches()[self.start :])

    @property
    def total(self) -> int:
        """Batches in a whole epoch."""
        return (len(self.lengths) + self.size - 1) // self.size

    def __len__(self) -> int:
        return max(0, self.total - self.start)


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) lengths -> (B, width) bool, True on each row's first `length` positions (right padding).

    From the lengths, not from comparing ids with the pad id: a real token may share the pad's id."""
    return torch.arange(width)[None, :] < lengths[:, None]


def pad(seqs: Sequence[Sequence], value: int) -> torch.Tensor:
    """Right-pad to the longest sequence in the batch: (B, T) for sequences of ids, (B, T, K) for
    sequences of K-id rows."""
    rows = [torch.as_tensor(s, dtype=torch.long) for s in seqs]
    trailing = next((r.shape[1:] for r in rows if len(r)), ())
    out = torch.full((len(rows), max(len(r) for r in rows), *trailing), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            out[i, : len(r)] = r
    return out
