"""Batches simulated while training, so no cache is needed."""

import math
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from bliss.catalog.batch import flatten_catalog
from bliss.data.generate import shard_seed
from bliss.simulator.simulate import ImageSimulator

__all__ = ["SimulatedDataModule"]

#: a batch key is ``(epoch << EPOCH_SHIFT) + index``, so epochs never share a seed
EPOCH_SHIFT = 20


def _flatten(batch: dict[str, Any]) -> dict[str, Tensor]:
    out = {k: v for k, v in batch.items() if isinstance(v, Tensor)}
    out.update(flatten_catalog(batch["catalog"]))
    return out


class _SimulatedBatches(Dataset):
    """Whole simulated batches; the batch of key ``key`` in stream ``stream`` has a fixed seed.

    Args:
        on_device: leave the images where the renderer made them (a CUDA renderer's GPU), for
            a loader in the training process; else they come back on the CPU.
    """

    def __init__(
        self,
        simulator: ImageSimulator,
        batch_size: int,
        seed: int,
        stream: int,
        on_device: bool = False,
    ) -> None:
        self.simulator = simulator
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream
        self.on_device = on_device

    def __getitem__(self, key: int) -> dict[str, Tensor]:
        seed = shard_seed(self.seed, (self.stream << 40) + key)
        batch = self.simulator.simulate(self.batch_size, seed=seed, on_device=self.on_device)
        return _flatten(batch)


class _BatchKeys(Sampler[int]):
    """Keys of the batches of one epoch: ``n_batches`` fresh ones per epoch, or the same ones.

    Lightning calls :meth:`set_epoch` at the start of every training epoch, in the main process,
    before the loader hands keys to its workers. With ``num_replicas`` ranks, rank ``rank`` takes
    every ``num_replicas``-th key from its own position, so ranks share no batch; every rank gets
    ``ceil(n_batches / num_replicas)`` keys (a rank that ran out of batches early would leave the
    others waiting for it in the gradient all-reduce).
    """

    def __init__(
        self, n_batches: int, fresh_each_epoch: bool, num_replicas: int = 1, rank: int = 0
    ) -> None:
        self.n_batches = n_batches
        self.fresh_each_epoch = fresh_each_epoch
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next epoch's batches."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        first = (self.epoch << EPOCH_SHIFT) if self.fresh_each_epoch else 0
        return iter(
            range(first + self.rank, first + len(self) * self.num_replicas, self.num_replicas)
        )

    def __len__(self) -> int:
        return math.ceil(self.n_batches / self.num_replicas)


class SimulatedDataModule(pl.LightningDataModule):
    """Train on freshly simulated batches every epoch; validate on a fixed simulated set.

    With a CUDA renderer (``simulator.renderer.device=cuda``) and no loader workers, batches are
    rendered on the GPU and stay there; with workers, those start by ``spawn`` (CUDA cannot run
    in a forked process) and hand over CPU batches, pinned when training on a GPU.

    Args:
        simulator: the image simulator.
        batch_size: images per batch.
        batches_per_epoch: training batches per epoch (all ranks together).
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
        on_device = num_workers == 0
        self.train_set = _SimulatedBatches(simulator, batch_size, seed, 1, on_device)
        self.val_set = _SimulatedBatches(simulator, batch_size, seed, 2, on_device)
        self.test_set = _SimulatedBatches(simulator, batch_size, seed, 3, on_device)
        self.batches_per_epoch = batches_per_epoch
        self.val_batches = val_batches
        self.num_workers = num_workers
        self._renders_on_cuda = simulator.render_device.type == "cuda"

    def _loader(self, dataset: _SimulatedBatches, n_batches: int, fresh: bool) -> DataLoader:
        options: dict[str, Any] = {}
        if self.num_workers:
            options["persistent_workers"] = True
            if self._renders_on_cuda:
                options["multiprocessing_context"] = "spawn"
        world, rank, training_on_cuda = 1, 0, False
        if self.trainer is not None:
            world, rank = self.trainer.world_size, self.trainer.global_rank
            training_on_cuda = self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(
            dataset,
            batch_size=None,  # the dataset yields whole batches
            sampler=_BatchKeys(n_batches, fresh, world, rank),
            num_workers=self.num_workers,
            pin_memory=training_on_cuda and not (dataset.on_device and self._renders_on_cuda),
            **options,
        )

    def train_dataloader(self) -> DataLoader:
        """Fresh batches every epoch, ``batches_per_epoch`` in all, split over the ranks."""
        return self._loader(self.train_set, self.batches_per_epoch, fresh=True)

    def val_dataloader(self) -> DataLoader:
        """The fixed validation batches, split over the ranks."""
        return self._loader(self.val_set, self.val_batches, fresh=False)

    def test_dataloader(self) -> DataLoader:
        """The fixed test batches, split over the ranks."""
        return self._loader(self.test_set, self.val_batches, fresh=False)
