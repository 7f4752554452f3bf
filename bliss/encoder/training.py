"""``bliss mode=train``: fit the encoder, keep the best and last checkpoints, then test."""

import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bliss.encoder.checkpoint import RecordConfig, check_compatible, read_checkpoint
from bliss.errors import BlissConfigError, BlissWarning

__all__ = ["build_datamodule", "last_checkpoint", "train"]


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The cached-shard or on-the-fly DataModule chosen by ``train.data``."""
    if cfg.train.data == "cached":
        datamodule = instantiate(cfg.data)
        datamodule.setup()
        saved = datamodule.manifest.get("config", {}).get("survey", {}).get("bands")
        if saved is not None and list(saved) != list(cfg.survey.bands):
            raise BlissConfigError(
                f"shards in {cfg.data.cached_data} have bands {saved} but the encoder is built for "
                f"survey.bands={list(cfg.survey.bands)}; generate shards for this survey or change survey."
            )
        images = datamodule.manifest.get("config", {}).get("simulator", {}).get("image_size")
        if images is not None and images % cfg.prior.tile_slen:
            raise BlissConfigError(
                f"shard images of {images} px are not whole {cfg.prior.tile_slen}-px tiles."
            )
        return datamodule
    if cfg.train.data == "simulate":
        # the encoder package may not import the simulator: `bliss.main` builds this DataModule
        raise BlissConfigError(
            "train.data=simulate needs the simulated DataModule built by `bliss.main.run_train`; "
            "pass it to `train(cfg, datamodule)`."
        )
    raise BlissConfigError(f"train.data={cfg.train.data!r}; expected `cached` or `simulate`.")


def _load_initial_weights(encoder: pl.LightningModule, path: str) -> None:
    """Load a checkpoint's weights; modules the checkpoint lacks keep their fresh initialisation."""
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


def last_checkpoint(cfg: DictConfig) -> str | None:
    """The ``last.ckpt`` that the checkpoint callback keeps in this run's directory, if any."""
    callback = (cfg.get("callbacks") or {}).get("checkpoint")
    directory = Path(callback.dirpath) if callback else Path(cfg.paths.run_dir) / "checkpoints"
    last = directory / "last.ckpt"
    return str(last) if last.is_file() else None


def train(cfg: DictConfig, datamodule: pl.LightningDataModule | None = None) -> dict[str, Any]:
    """Fit the encoder described by ``cfg`` and return the final metrics.

    Args:
        cfg: the composed run config.
        datamodule: the data to fit [default: the cached shards of ``cfg.data``].

    Raises:
        BlissConfigError: the data do not fit the encoder, ``train.resume`` or
            ``train.init_weights`` is a checkpoint of a different factor set or band list, or both
            are set.
    """
    pl.seed_everything(cfg.seed, workers=True)
    init_weights = cfg.train.get("init_weights")
    resume = cfg.train.resume
    if resume == "auto":
        resume = last_checkpoint(cfg)
        if resume is not None:  # a requeued or re-run job: continue it, fine-tune or not
            print(f"train.resume=auto: continuing from {resume}", file=sys.stderr)
            init_weights = None
    elif resume and init_weights:
        raise BlissConfigError(
            "train.resume and train.init_weights are both set; resume continues a run (step, "
            "optimizer, schedule), init_weights starts a new run from trained weights. Set one."
        )
    for path in (resume, init_weights):
        if path:
            check_compatible(read_checkpoint(path)["bliss_config"], cfg.encoder, path)
    if datamodule is None:
        datamodule = build_datamodule(cfg)
    encoder = instantiate(cfg.encoder)
    if init_weights:  # fine-tuning: trained weights, fresh optimizer and schedule
        _load_initial_weights(encoder, init_weights)
    record = OmegaConf.to_container(cfg, resolve=True)
    # entries set to null (e.g. by the debug preset) are switched off
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(RecordConfig(record))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None] or False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    Path(cfg.paths.run_dir).mkdir(parents=True, exist_ok=True)
    trainer.fit(encoder, datamodule=datamodule, ckpt_path=resume)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.train.test_after_fit and not cfg.trainer.get("fast_dev_run"):
        checkpoint = trainer.checkpoint_callback
        best = (
            checkpoint.best_model_path
            if checkpoint is not None and checkpoint.best_model_path
            else None
        )
        results = trainer.test(encoder, datamodule=datamodule, ckpt_path=best)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    return metrics
