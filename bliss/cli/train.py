"""``bliss mode=train``: build the data, the encoder and the trainer from the config, then fit."""

import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bliss.errors import BlissConfigError

__all__ = ["build_datamodule", "run_train"]


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The cached-shard or on-the-fly DataModule chosen by ``train.data``.

    Raises:
        BlissConfigError: ``train.data`` is unknown, or the shards do not fit the encoder.
    """
    if cfg.train.data == "cached":
        from bliss.encoder.training import check_shards_fit

        datamodule = instantiate(cfg.data)
        datamodule.setup()
        check_shards_fit(
            datamodule.manifest, cfg.survey.bands, cfg.prior.tile_slen, cfg.data.cached_data
        )
        return datamodule
    if cfg.train.data == "simulate":
        from bliss.cli.generate import build_simulator
        from bliss.data.on_the_fly import SimulatedDataModule

        spec = cfg.train.simulate
        return SimulatedDataModule(
            build_simulator(cfg),
            cfg.data.batch_size,
            spec.batches_per_epoch,
            spec.val_batches,
            cfg.seed,
            spec.num_workers,
        )
    raise BlissConfigError(f"train.data={cfg.train.data!r}; expected `cached` or `simulate`.")


def _checkpoint_dir(cfg: DictConfig) -> Path:
    callback = (cfg.get("callbacks") or {}).get("checkpoint")
    return Path(callback.dirpath) if callback else Path(cfg.paths.run_dir) / "checkpoints"


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the encoder described by ``cfg`` and return the final metrics.

    Raises:
        BlissConfigError: the data do not fit the encoder, ``train.resume`` or
            ``train.init_weights`` is a checkpoint of a different factor set or band list, or both
            are set.
    """
    from bliss.encoder.checkpoint import RecordConfig, check_compatible, read_checkpoint
    from bliss.encoder.training import fit, last_checkpoint, load_initial_weights

    # the simulator is built before seeding, as it always was: the same seed, the same batches
    datamodule = build_datamodule(cfg) if cfg.train.data == "simulate" else None
    pl.seed_everything(cfg.seed, workers=True)
    init_weights = cfg.train.get("init_weights")
    resume = cfg.train.resume
    if resume == "auto":
        resume = last_checkpoint(_checkpoint_dir(cfg))
        if resume is not None:  # a requeued or re-run job: continue it, fine-tune or not
            print(f"train.resume=auto: continuing from {resume}", file=sys.stderr)
            init_weights = None
    elif resume and init_weights:
        raise BlissConfigError(
            "train.resume and train.init_weights are both set; resume continues a run (step, "
            "optimizer, schedule), init_weights starts a new run from trained weights. Set one."
        )
    encoder_config = OmegaConf.to_container(cfg.encoder, resolve=True)
    for path in (resume, init_weights):
        if path:
            check_compatible(read_checkpoint(path)["bliss_config"], encoder_config, path)
    if datamodule is None:
        datamodule = build_datamodule(cfg)
    encoder = instantiate(cfg.encoder)
    if init_weights:  # fine-tuning: trained weights, fresh optimizer and schedule
        load_initial_weights(encoder, init_weights)
    record = OmegaConf.to_container(cfg, resolve=True)
    # entries set to null (e.g. by the debug preset) are switched off
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(RecordConfig(record))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None] or False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    Path(cfg.paths.run_dir).mkdir(parents=True, exist_ok=True)
    return fit(
        encoder, trainer, datamodule, resume=resume, test_after_fit=cfg.train.test_after_fit
    )
