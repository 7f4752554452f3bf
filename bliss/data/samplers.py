"""A shard-aware sampler: shuffles shards, then images within each shard, and splits ranks."""

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from bliss.errors import BlissValueError

__all__ = ["ShardBlockSampler"]


class ShardBlockSampler(Sampler[int]):
    """Visit one shard at a time so a loader keeps only a shard or two in memory.

    Each epoch, shards are visited in a random order and the images inside a shard in a random
    order (``shuffle=True``); the order depends only on ``seed`` and the epoch
    (:meth:`set_epoch`). Ranks take interleaved positions of that order, truncated to a common
    length, so ranks never see the same image in an epoch.

    Args:
        shard_sizes: images per shard, in dataset order.
        shuffle: randomise shard and image order.
        seed: base seed of the shuffle.
        num_replicas: number of ranks (DDP world size).
        rank: this process's rank.
    """

    def __init__(
        self,
        shard_sizes: Sequence[int],
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise BlissValueError(
                f"rank={rank} with num_replicas={num_replicas}; expected 0 <= rank < num_replicas."
            )
        self.shard_sizes = list(shard_sizes)
        self.starts = [sum(self.shard_sizes[:i]) for i in range(len(self.shard_sizes))]
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle for a new epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Images this rank visits per epoch."""
        return sum(self.shard_sizes) // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        """Indices of this rank, in visiting order."""
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        n_shards = len(self.shard_sizes)
        shard_order = (
            torch.randperm(n_shards, generator=generator)
            if self.shuffle
            else torch.arange(n_shards)
        )
        order: list[int] = []
        for shard in shard_order.tolist():
            size = self.shard_sizes[shard]
            inner = (
                torch.randperm(size, generator=generator) if self.shuffle else torch.arange(size)
            )
            order.extend((inner + self.starts[shard]).tolist())
        return iter(order[self.rank : len(self) * self.num_replicas : self.num_replicas])
