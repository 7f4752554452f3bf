"""``bliss mode=train``: check the settings, build data, encoder and trainer, then fit.

Every check that can fail runs before the first training step: the settings
(:func:`bliss.encoder.preflight.check_training_settings`), the shards (sizes and checksums of
every one, the recipe they were generated with), the checkpoint a run resumes. Rerunning the
same command continues its run: Hydra names the run directory after the command
(``bliss/conf/config.yaml``) and ``train.resume=auto`` finds its ``checkpoints/last.ckpt``.
"""

import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from bliss.errors import BlissConfigError

__all__ = ["build_datamodule", "run_train"]

_RECIPE = ("survey", "prior", "simulator")


def _say(message: str) -> None:
    """A line for the user, from the first process only (DDP runs this module in each)."""
    if rank_zero_only.rank == 0:
        print(message, file=sys.stderr)


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The cached-shard or on-the-fly DataModule chosen by ``train.data``.

    Raises:
        BlissConfigError: ``train.data`` is unknown, or the shards were generated for another
            config (bands, tiles, or any survey / prior / simulator key).
        BlissIOError: a shard is missing, or its size or checksum differ from the manifest.
    """
    if cfg.train.data == "cached":
        from bliss.encoder.preflight import check_shards_fit

        datamodule = instantiate(cfg.data)
        datamodule.setup()
        recipe = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in _RECIPE}
        check_shards_fit(
            datamodule.manifest,
            cfg.survey.bands,
            cfg.prior.tile_slen,
            cfg.data.cached_data,
            recipe=recipe,
        )
        checked = datamodule.verification
        if checked:
            what = "sizes and CRC-32s" if datamodule.verify == "checksums" else "sizes"
            _say(
                f"checked {checked['n_shards']} shards ({checked['bytes'] / 1e6:.1f} MB) in "
                f"{cfg.data.cached_data}: {what} match ({checked['seconds']:.2f} s)"
            )
            if checked["unverified"]:
                _say(
                    f"{checked['unverified']} shards have no recorded checksum (an older bliss "
                    "made them): regenerate them to have them checked"
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


def _check_settings(cfg: DictConfig) -> None:
    from bliss.encoder.preflight import check_training_settings

    callback = (cfg.get("callbacks") or {}).get("checkpoint")
    scheduler = cfg.encoder.get("scheduler")
    check_training_settings(
        batch_size=cfg.data.batch_size,
        max_steps=cfg.trainer.max_steps,
        max_epochs=cfg.trainer.max_epochs,
        optimizer=OmegaConf.to_container(cfg.encoder.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(scheduler, resolve=True) if scheduler else None,
        every_n_train_steps=callback.get("every_n_train_steps") if callback else None,
    )


def _resume_plan(cfg: DictConfig) -> tuple[str | None, str | None]:
    """The checkpoint to continue and the weights to start from, said to the user.

    ``train.resume=auto`` continues this run directory's ``last.ckpt`` (a rerun of the same
    command, a requeued SLURM job); ``null`` starts afresh, moving the directory's earlier
    checkpoints and logs aside; a path continues that checkpoint.
    """
    from bliss.encoder.training import archive_run_outputs, last_checkpoint

    run_dir, resume = Path(cfg.paths.run_dir), cfg.train.resume
    init_weights = cfg.train.get("init_weights")
    if resume == "auto":
        resume = last_checkpoint(_checkpoint_dir(cfg))
        if resume is not None:  # a rerun or requeued job: continue it, fine-tune or not
            return resume, None
    elif resume and init_weights:
        raise BlissConfigError(
            "train.resume and train.init_weights are both set; resume continues a run (step, "
            "optimizer, schedule), init_weights starts a new run from trained weights. Set one."
        )
    if resume:
        return resume, init_weights
    moved = archive_run_outputs(run_dir) if rank_zero_only.rank == 0 else None
    if cfg.train.resume is None:
        how = f"train.resume=null: starting afresh in {run_dir}"
    else:
        how = f"train.resume=auto: no last.ckpt in {_checkpoint_dir(cfg)}; a new run in {run_dir}"
    _say(how + (f"; the earlier run's checkpoints and logs were moved to {moved}" if moved else ""))
    if moved and init_weights:  # e.g. a diverged run restarted from its own previous.ckpt
        weights = Path(init_weights).resolve()
        if weights.is_relative_to(run_dir.resolve()) and not weights.exists():
            init_weights = str(moved / weights.relative_to(run_dir.resolve()))
    return None, init_weights


def build_encoder_module(cfg: DictConfig) -> pl.LightningModule:
    """The trainable encoder of ``cfg.encoder``: bliss's network with Lightning's hooks.

    ``encoder._target_`` names the network (:class:`~bliss.encoder.encoder.Encoder`, which
    prediction loads without Lightning); training builds
    :class:`~bliss.encoder.module.EncoderModule` from the same arguments. A target that is
    already a ``LightningModule`` is built as it is.

    Raises:
        BlissConfigError: ``encoder._target_`` is neither.
    """
    from hydra.utils import get_class

    from bliss.encoder.encoder import Encoder
    from bliss.encoder.module import EncoderModule

    target = get_class(cfg.encoder._target_)
    if issubclass(target, pl.LightningModule):
        return instantiate(cfg.encoder)
    if target is not Encoder:
        raise BlissConfigError(
            f"encoder._target_={cfg.encoder._target_} is neither bliss.encoder.Encoder nor a "
            "LightningModule; training needs one of them."
        )
    return instantiate(cfg.encoder, _target_=f"{EncoderModule.__module__}.EncoderModule")


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the encoder described by ``cfg`` and return the final metrics.

    Raises:
        BlissConfigError: a training setting is invalid, the data do not fit the encoder or
            hold fewer images than one batch, ``train.resume`` or ``train.init_weights`` is a
            checkpoint of a different factor set, band list or optimizer, or both are set.
        BlissIOError: a shard or checkpoint is missing or damaged.
    """
    from bliss.encoder.callbacks import RecordConfig
    from bliss.encoder.checkpoint import check_compatible, read_checkpoint
    from bliss.encoder.preflight import check_enough_images, check_resumable
    from bliss.encoder.training import checkpoint_summary, fit, load_initial_weights

    _check_settings(cfg)
    # the simulator is built before seeding, as it always was: the same seed, the same batches
    datamodule = build_datamodule(cfg) if cfg.train.data == "simulate" else None
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    resume, init_weights = _resume_plan(cfg)
    encoder_config = OmegaConf.to_container(cfg.encoder, resolve=True)
    if resume:
        saved = read_checkpoint(resume)
        check_compatible(saved["bliss_config"], encoder_config, resume)
        check_resumable(saved["bliss_config"]["encoder"], encoder_config, resume)
        step, max_steps = int(saved.get("global_step", 0)), cfg.trainer.max_steps
        if 0 < max_steps <= step:
            _say(
                f"the run in {cfg.paths.run_dir} is complete ({resume}: step {step} of "
                f"trainer.max_steps={max_steps}); nothing to train. train.resume=null starts it "
                "afresh, a larger trainer.max_steps continues it."
            )
            return {"global_step": float(step)}
        _say(
            f"train.resume={cfg.train.resume}: continuing from {resume} (step {step}) in "
            f"{cfg.paths.run_dir}; train.resume=null starts afresh"
        )
        del saved
    if init_weights:
        check_compatible(
            read_checkpoint(init_weights)["bliss_config"], encoder_config, init_weights
        )
    if datamodule is None:
        datamodule = build_datamodule(cfg)
    encoder = build_encoder_module(cfg)
    if init_weights:  # fine-tuning: trained weights, fresh optimizer and schedule
        load_initial_weights(encoder, init_weights)
    record = OmegaConf.to_container(cfg, resolve=True)
    # entries set to null (e.g. by the debug preset) are switched off
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(RecordConfig(record))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None] or False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    if cfg.train.data == "cached":
        check_enough_images(
            len(datamodule.datasets["train"]),
            cfg.data.batch_size,
            trainer.world_size,
            cfg.data.cached_data,
        )
    Path(cfg.paths.run_dir).mkdir(parents=True, exist_ok=True)
    summary: list[str] = []
    metrics = fit(
        encoder,
        trainer,
        datamodule,
        resume=resume,
        test_after_fit=cfg.train.test_after_fit,
        on_fitted=lambda fitted: summary.append(checkpoint_summary(fitted)),
    )
    _say(summary[0])  # last: the line to look for after the test table
    return metrics
