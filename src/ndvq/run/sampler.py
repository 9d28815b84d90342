"""``EpochSampler``: a resumable, rank-sharded order of the training items.

Example:
    >>> list(EpochSampler(6, seed=0, epoch=0, shuffle=False, rank=1, world_size=2))
    [1, 3, 5]
"""

from __future__ import annotations

import torch

__all__ = ["EpochSampler"]


class EpochSampler(torch.utils.data.Sampler):
    """A resumable, rank-sharded sampler: the order depends only on ``(seed, epoch)``.

    The epoch's permutation (or ``range`` when not shuffling) is padded to a multiple of
    ``world_size``, rank ``r`` takes every ``world_size``-th index from ``r``, and the first
    ``skip`` indices of the shard are dropped (the items already consumed before a resume).

    Args:
        n: dataset length.
        seed: base seed (``train.seed``).
        epoch: epoch number (mixed into the seed).
        rank: this process's global rank. Default 0.
        world_size: number of processes. Default 1.
        shuffle: random order per epoch. Default True.
        skip: items of this rank's shard to skip. Default 0.
        pad: pad to equal shard sizes (training); False gives uneven shards without repeats (eval).
            Default True.
    """

    def __init__(self, n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, skip: int = 0, pad: bool = True):
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, epoch, rank, world_size
        self.shuffle, self.skip, self.pad = shuffle, skip, pad

    def shard(self) -> list[int]:
        """This rank's indices for the epoch, before ``skip``."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.pad and self.n % self.world:
            order += order[: self.world - self.n % self.world]
        return order[self.rank:: self.world]

    def __iter__(self):
        return iter(self.shard()[self.skip:])

    def __len__(self) -> int:
        return max(len(self.shard()) - self.skip, 0)
