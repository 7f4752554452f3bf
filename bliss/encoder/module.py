"""The encoder as a Lightning module: its training, validation and test hooks.

:class:`~bliss.encoder.encoder.Encoder` is the network and its loss and inference, a plain
``torch.nn.Module`` that prediction loads without Lightning. ``bliss mode=train`` builds this
subclass from the same ``encoder`` config; the weights, and so the
checkpoints, are the same: a checkpoint of either loads into the other.
"""

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from bliss.catalog.batch import field_key
from bliss.encoder.encoder import Encoder, catalog_from_batch
from bliss.encoder.schedules import build_scheduler
from bliss.errors import BlissValueError

__all__ = ["EncoderModule"]


class EncoderModule(Encoder, pl.LightningModule):
    """:class:`~bliss.encoder.encoder.Encoder` with Lightning's training and evaluation hooks.

    Takes the arguments of :class:`~bliss.encoder.encoder.Encoder`. Training minimises
    :meth:`~bliss.encoder.encoder.Encoder.nll`; validation and test log the loss and the detection,
    flux and calibration metrics of :mod:`bliss.encoder.evaluation`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._validation: list[dict[str, Any]] = []

    def _diverged(self, what: str, batch_idx: int | None = None) -> BlissValueError:
        """The error that stops a diverged run, naming its step and the checkpoint kept."""
        trainer = self._trainer
        kept = None
        for callback in getattr(trainer, "checkpoint_callbacks", []) if trainer else []:
            # bliss.encoder.callbacks.LastCheckpoint knows whether last.ckpt holds these weights
            if hasattr(callback, "good_checkpoint"):
                kept = kept or callback.good_checkpoint(self.global_step)
        where = (
            f"the last good checkpoint is {kept}: start from its weights with a lower learning "
            f"rate (train.init_weights={kept} train.resume=null encoder.optimizer.lr=...)"
            if kept
            else "no good checkpoint was written before it: start again with a lower "
            "encoder.optimizer.lr"
        )
        return BlissValueError(
            f"training diverged at global step {self.global_step}"
            f"{'' if batch_idx is None else f', batch {batch_idx}'}: {what}; {where}, or check "
            "the data."
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step; stops on a non-finite loss."""
        loss = self.nll(batch)
        if not torch.isfinite(loss):
            raise self._diverged(f"the loss is {loss.item()}", batch_idx)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["images"].shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        """AdamW (or the configured optimizer) with the configured schedule."""
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = build_scheduler(self.scheduler_factory, optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume a schedule's progress but take its shape from the current config.

        A saved scheduler state also holds its settings (``OneCycleLR`` stores ``total_steps``),
        which would otherwise override the config, so a run resumed with a larger
        ``trainer.max_steps`` would fail once the old schedule ended.
        """
        progress = ("last_epoch", "_step_count", "_last_lr")
        checkpoint["lr_schedulers"] = [
            {k: v for k, v in state.items() if k in progress}
            for state in checkpoint.get("lr_schedulers", [])
        ]

    # ---- validation and test ------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Loss and the catalog-level statistics gathered for the epoch's metrics."""
        self._evaluate_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """As validation, on the test split."""
        self._evaluate_step(batch, "test")

    def _evaluate_step(self, batch: dict[str, Tensor], stage: str) -> None:
        from bliss.encoder.evaluation import collect_step

        # the features once, for the loss, the region factors and the catalog
        n_images = batch["images"].shape[0]
        truth = catalog_from_batch(batch, self.tile_slen)
        features = self.tile_features(batch)
        loss = self.nll_from_features(features, truth)
        if self.regions:  # the region factors' share of the loss, and their point estimates' error
            region_params = self.region_params(features)
            region_loss = self.region_nll(features, batch, region_params)
            loss = loss + region_loss
            self.log(f"{stage}/region_nll", region_loss, batch_size=n_images)
            for name, params in region_params.items():
                region = self.regions[name]
                error = region.point_estimate(params) - batch[field_key(region.key)]
                rmse = error.pow(2).mean().sqrt()
                self.log(f"{stage}/{name}_rmse", rmse, batch_size=n_images, prog_bar=True)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n_images, sync_dist=True)
        estimate, params = self.infer_from_features(features)
        self._validation.append(collect_step(self, truth, estimate, params))

    def on_validation_epoch_end(self) -> None:
        """Log detection, flux and calibration metrics."""
        self._finish_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Log the test metrics and the calibration plot."""
        self._finish_epoch("test")

    def _finish_epoch(self, stage: str) -> None:
        from bliss.encoder.evaluation import summarize

        if not self._validation:
            return
        metrics = summarize(self, self._validation, stage)
        self._validation = []
        for name, value in metrics.items():
            if isinstance(value, float) and math.isfinite(value):
                self.log(f"{stage}/{name}", value, sync_dist=True)
