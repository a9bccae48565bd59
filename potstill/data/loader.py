"""Deterministic batching: the batch at step ``s`` is a pure function of (seed, s).

That makes resumed runs see exactly the data an uninterrupted run would, with no loader state
to save, and splits a global batch across ``torchrun`` ranks without a DistributedSampler.
"""
from __future__ import annotations

from typing import Iterator

import torch

from . import ArrayData, DataError


class BatchSampler:
    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, drop_last: bool = True):
        if n <= 0:
            raise DataError("cannot batch an empty dataset")
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.batch_size = min(batch_size, n)
        if self.batch_size % world:
            raise DataError(f"batch size {self.batch_size} is not divisible by the {world} processes")
        self.per_epoch = n // self.batch_size if drop_last else -(-n // self.batch_size)
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        """This rank's share of the global batch at ``step``."""
        epoch, i = divmod(step, self.per_epoch)
        idx = self._permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        return idx[self.rank::self.world]


def batches_from(data: ArrayData, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1) -> Iterator[dict]:
    sampler = BatchSampler(len(data), batch_size, seed, rank, world)
    step = start
    while True:
        idx = sampler.indices(step)
        yield {"x": data.x[idx], "y": data.y[idx], "index": idx}
        step += 1
