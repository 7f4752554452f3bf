"""SimulatedDataModule: fresh batches every epoch under Lightning, fixed validation batches."""

import pytorch_lightning as pl
import torch
from torch import Tensor

from bliss.data.on_the_fly import SimulatedDataModule
from bliss.simulator.simulate import ImageSimulator


class _Recorder(pl.LightningModule):
    """Records a checksum of every batch it trains or validates on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[str, list[tuple[int, float]]] = {"train": [], "val": []}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        self.seen["train"].append((self.current_epoch, float(batch["images"].sum())))
        return self.weight * batch["images"].mean()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.seen["val"].append((self.current_epoch, float(batch["images"].sum())))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(simulator: ImageSimulator, num_workers: int = 0) -> dict[str, list[tuple[int, float]]]:
    module = _Recorder()
    datamodule = SimulatedDataModule(
        simulator, batch_size=2, batches_per_epoch=2, val_batches=1, seed=3, num_workers=num_workers
    )
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    return module.seen


def test_every_epoch_trains_on_new_batches_and_validates_on_the_same(
    simulator: ImageSimulator,
) -> None:
    seen = _fit(simulator)
    train = seen["train"]
    assert [epoch for epoch, _ in train] == [0, 0, 1, 1, 2, 2]
    # Lightning builds the loader once per fit: the seeds must move on with the epoch anyway
    assert len({checksum for _, checksum in train}) == 6
    assert len({checksum for _, checksum in seen["val"]}) == 1
    assert len(seen["val"]) == 3


def test_batches_are_reproducible_and_independent_of_workers(simulator: ImageSimulator) -> None:
    first = _fit(simulator)
    assert _fit(simulator) == first
    assert _fit(simulator, num_workers=1) == first


def test_ranks_draw_disjoint_batches_of_equal_number() -> None:
    from bliss.data.on_the_fly import _BatchKeys

    for n_batches, fresh in ((5, True), (4, False), (1, False)):
        keys = [_BatchKeys(n_batches, fresh, num_replicas=2, rank=r) for r in (0, 1)]
        for sampler in keys:
            sampler.set_epoch(3)
        drawn = [list(k) for k in keys]
        assert len(drawn[0]) == len(drawn[1]) == len(keys[0]) == -(-n_batches // 2)
        assert not set(drawn[0]) & set(drawn[1])
        assert (min(drawn[0]) >> 20 == 3) == fresh  # the epoch enters training keys only
