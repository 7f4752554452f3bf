"""Fitting the encoder: checks of the data and checkpoints, then Lightning's fit and test.

The trainer, the data and the encoder are built by :mod:`bliss.cli.train` from the config;
this module takes them as objects.
"""

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from bliss.encoder.checkpoint import read_checkpoint
from bliss.errors import BlissConfigError, BlissWarning

__all__ = ["check_shards_fit", "fit", "last_checkpoint", "load_initial_weights"]


def check_shards_fit(
    manifest: Mapping[str, Any], bands: Sequence[str], tile_slen: int, cached_data: str | Path
) -> None:
    """Raise if cached shards were generated for other bands or in images of partial tiles.

    Args:
        manifest: the shards' ``manifest.json`` (its ``config`` records the generation).
        bands: the encoder's bands (``survey.bands``).
        tile_slen: the tile side, pixels (``prior.tile_slen``).
        cached_data: the shard directory, for the message.
    """
    recipe = manifest.get("config", {})
    saved = recipe.get("survey", {}).get("bands")
    if saved is not None and list(saved) != list(bands):
        raise BlissConfigError(
            f"shards in {cached_data} have bands {saved} but the encoder is built for "
            f"survey.bands={list(bands)}; generate shards for this survey or change survey."
        )
    images = recipe.get("simulator", {}).get("image_size")
    if images is not None and images % tile_slen:
        raise BlissConfigError(f"shard images of {images} px are not whole {tile_slen}-px tiles.")


def load_initial_weights(encoder: pl.LightningModule, path: str | Path) -> None:
    """Load a checkpoint's weights; modules the checkpoint lacks keep their fresh initialisation.

    Raises:
        BlissConfigError: the checkpoint holds weights this encoder does not have.
    """
    result = encoder.load_state_dict(read_checkpoint(path)["state_dict"], strict=False)
    if result.unexpected_keys:
        raise BlissConfigError(
            f"train.init_weights={path} holds weights this encoder does not have "
            f"({result.unexpected_keys[:5]}...); use a checkpoint of the same architecture."
        )
    if result.missing_keys:
        warnings.warn(
            f"train.init_weights={path} lacks {result.missing_keys}; those start from their "
            "initialisation.",
            BlissWarning,
            stacklevel=2,
        )


def last_checkpoint(directory: str | Path) -> str | None:
    """The ``last.ckpt`` that the checkpoint callback keeps in ``directory``, if any."""
    last = Path(directory) / "last.ckpt"
    return str(last) if last.is_file() else None


def fit(
    encoder: pl.LightningModule,
    trainer: pl.Trainer,
    datamodule: pl.LightningDataModule,
    *,
    resume: str | None = None,
    test_after_fit: bool = True,
) -> dict[str, float]:
    """Fit ``encoder`` (continuing ``resume`` if given), then test the best checkpoint.

    Args:
        encoder: the encoder (already holding ``train.init_weights``' weights when fine-tuning).
        trainer: the Lightning trainer, with its callbacks and loggers.
        datamodule: the data.
        resume: a checkpoint to continue (step, optimizer, schedule), or None.
        test_after_fit: run the test set on the best checkpoint afterwards (skipped under
            ``fast_dev_run``).

    Returns:
        The trainer's final metrics, with the test metrics.
    """
    trainer.fit(encoder, datamodule=datamodule, ckpt_path=resume)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if test_after_fit and not trainer.fast_dev_run:
        checkpoint = trainer.checkpoint_callback
        best = (
            checkpoint.best_model_path
            if checkpoint is not None and checkpoint.best_model_path
            else None
        )
        results = trainer.test(encoder, datamodule=datamodule, ckpt_path=best)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    return metrics
