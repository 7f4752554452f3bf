"""Batches simulated while training, so no cache is needed."""

from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from bliss.data.generate import shard_seed
from bliss.simulator.simulate import ImageSimulator

__all__ = ["SimulatedDataModule"]


def _flatten(batch: dict[str, Any]) -> dict[str, Tensor]:
    out = {k: v for k, v in batch.items() if isinstance(v, Tensor)}
    out.update({f"catalog/{k}": v for k, v in batch["catalog"].items()})
    return out


class _SimulatedBatches(IterableDataset):
    """``n_batches`` whole batches; batch ``i`` of stream ``stream`` has a fixed seed."""

    def __init__(
        self, simulator: ImageSimulator, batch_size: int, n_batches: int, seed: int, stream: int
    ) -> None:
        self.simulator = simulator
        self.batch_size = batch_size
        self.n_batches = n_batches
        self.seed = seed
        self.stream = stream
        self.epoch = 0

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        for index in range(worker, self.n_batches, n_workers):
            seed = shard_seed(self.seed, (self.stream << 40) + (self.epoch << 20) + index)
            yield _flatten(self.simulator.simulate(self.batch_size, seed=seed))

    def __len__(self) -> int:
        return self.n_batches


class SimulatedDataModule(pl.LightningDataModule):
    """Train on freshly simulated batches every epoch; validate on a fixed simulated set.

    Args:
        simulator: the image simulator.
        batch_size: images per batch.
        batches_per_epoch: training batches per epoch.
        val_batches: validation (and test) batches, the same every epoch.
        seed: base seed; train, val and test use disjoint seed streams.
        num_workers: loader processes.
    """

    def __init__(
        self,
        simulator: ImageSimulator,
        batch_size: int,
        batches_per_epoch: int,
        val_batches: int,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train_set = _SimulatedBatches(simulator, batch_size, batches_per_epoch, seed, stream=1)
        self.val_set = _SimulatedBatches(simulator, batch_size, val_batches, seed, stream=2)
        self.test_set = _SimulatedBatches(simulator, batch_size, val_batches, seed, stream=3)
        self.num_workers = num_workers

    def _loader(self, dataset: _SimulatedBatches) -> DataLoader:
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        """Fresh batches: the epoch number enters the seed."""
        if self.trainer is not None:
            self.train_set.epoch = self.trainer.current_epoch
            rank = self.trainer.global_rank
            self.train_set.stream = 1 + 16 * rank  # ranks draw different images
        return self._loader(self.train_set)

    def val_dataloader(self) -> DataLoader:
        """The fixed validation batches."""
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        """The fixed test batches."""
        return self._loader(self.test_set)
