"""Fitting the encoder: a run directory's checkpoints and logs, then Lightning's fit and test.

The trainer, the data and the encoder are built by :mod:`bliss.cli.train` from the config;
this module takes them as objects. The checks made before fitting are in
:mod:`bliss.encoder.preflight`.
"""

import shutil
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from bliss.encoder.checkpoint import read_checkpoint
from bliss.encoder.preflight import check_shards_fit
from bliss.errors import BlissConfigError, BlissWarning

__all__ = [
    "RUN_OUTPUTS",
    "archive_run_outputs",
    "best_checkpoint",
    "check_shards_fit",
    "checkpoint_summary",
    "fit",
    "last_checkpoint",
    "load_initial_weights",
]

#: what a training run writes in its run directory (moved aside when it starts afresh)
RUN_OUTPUTS = ("checkpoints", "csv", "tensorboard")


def load_initial_weights(encoder: pl.LightningModule, path: str | Path) -> None:
    """Load a checkpoint's weights; modules the checkpoint lacks keep their fresh initialisation.

    Region heads (``encoder.regions``) of the checkpoint that this encoder lacks, or has with
    other shapes, are dropped with a warning: a study fine-tunes a model for other quantities.

    Raises:
        BlissConfigError: the checkpoint holds weights this encoder does not have.
    """
    state = read_checkpoint(path)["state_dict"]
    own = encoder.state_dict()
    # region heads are specific to a study's quantities: a fine-tuned model may have others
    dropped = [
        key
        for key, value in state.items()
        if ".region_heads." in f".{key}"
        and (key not in own or tuple(own[key].shape) != tuple(value.shape))
    ]
    if dropped:
        warnings.warn(
            f"train.init_weights={path}: region-head weights {dropped[:5]} do not fit this "
            "encoder's region factors; those heads start from their initialisation.",
            BlissWarning,
            stacklevel=2,
        )
    state = {key: value for key, value in state.items() if key not in dropped}
    state = _grow_context_input(state, own, path)
    result = encoder.load_state_dict(state, strict=False)
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


def _grow_context_input(state: dict, own: dict, path: str | Path) -> dict:
    """Zero weights for context channels the checkpoint's head was trained without.

    The context's light channels (``encoder.context_spill_fwhm_px``) come after the channels
    every model has, so a model trained without them is fine-tuned with them by giving their
    input weights zeros: the new model starts as the old one and learns to use them.
    """
    key = next((k for k in state if k.endswith("head.context.weight")), None)
    if key is None or key not in own:
        return state
    old, new = state[key], own[key]
    if old.shape == new.shape or old.shape[0] != new.shape[0] or old.shape[1] > new.shape[1]:
        return state
    grown = new.new_zeros(new.shape)
    grown[:, : old.shape[1]] = old
    warnings.warn(
        f"train.init_weights={path}: its context head reads {old.shape[1]} channels, this "
        f"encoder's {new.shape[1]}; the {new.shape[1] - old.shape[1]} new ones (the light "
        "channels) start with zero weights.",
        BlissWarning,
        stacklevel=3,
    )
    return {**state, key: grown}


def last_checkpoint(directory: str | Path) -> str | None:
    """The ``last.ckpt`` that the checkpoint callback keeps in ``directory``, if any."""
    last = Path(directory) / "last.ckpt"
    return str(last) if last.is_file() else None


def archive_run_outputs(run_dir: str | Path, names: tuple[str, ...] = RUN_OUTPUTS) -> Path | None:
    """Move an earlier run's checkpoints and logs to ``<run_dir>/previous/<date>_<time>/``.

    A run that starts afresh in a directory that holds another's outputs would otherwise mix
    them: its ``best.ckpt`` compared with the old run's scores, its CSV rows appended to the old
    history. Nothing is deleted.

    Returns:
        The folder they were moved to, or None when there was nothing to move.
    """
    run_dir = Path(run_dir)
    present = [run_dir / name for name in names if (run_dir / name).exists()]
    if not present:
        return None
    target = run_dir / "previous" / time.strftime("%Y-%m-%d_%H-%M-%S")
    while target.exists():  # two restarts within a second
        target = target.with_name(target.name + "+")
    target.mkdir(parents=True)
    for path in present:
        shutil.move(str(path), target / path.name)
    return target


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The best checkpoint of the run's monitored ``ModelCheckpoint``, if one was written."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor:
            path = callback.best_model_path
            if path and Path(path).is_file():
                return path
    return None


def checkpoint_summary(trainer: pl.Trainer) -> str:
    """One line: where the run's checkpoints are, the last step saved and the best score."""
    directories = {str(c.dirpath) for c in trainer.checkpoint_callbacks if c.dirpath}
    where = ", ".join(sorted(directories)) or "nowhere (no checkpoint callback)"
    parts = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.last_model_path:
            parts.append(f"{Path(callback.last_model_path).name} (step {trainer.global_step})")
    best = best_checkpoint(trainer)
    if best:
        monitor = next(c.monitor for c in trainer.checkpoint_callbacks if c.monitor)
        score = next(c.best_model_score for c in trainer.checkpoint_callbacks if c.monitor)
        parts.append(f"{Path(best).name} ({monitor} {float(score):.4g})")
    else:
        parts.append("no best checkpoint (no validation ran)")
    return f"checkpoints in {where}: {', '.join(parts)}"


def fit(
    encoder: pl.LightningModule,
    trainer: pl.Trainer,
    datamodule: pl.LightningDataModule,
    *,
    resume: str | None = None,
    test_after_fit: bool = True,
    on_fitted: Callable[[pl.Trainer], None] | None = None,
) -> dict[str, float]:
    """Fit ``encoder`` (continuing ``resume`` if given), then test the best checkpoint.

    Args:
        encoder: the encoder (already holding ``train.init_weights``' weights when fine-tuning).
        trainer: the Lightning trainer, with its callbacks and loggers.
        datamodule: the data.
        resume: a checkpoint to continue (step, optimizer, schedule), or None.
        test_after_fit: run the test set on the best checkpoint afterwards (skipped under
            ``fast_dev_run``).
        on_fitted: called with the trainer once fitting ended, before testing (which restores
            the best checkpoint's callback states), e.g. for :func:`checkpoint_summary`.

    Returns:
        The trainer's final metrics, with the test metrics.

    Raises:
        KeyboardInterrupt: Ctrl-C (Lightning shuts down and calls ``sys.exit(1)``; this turns it
            back into the interrupt, so that the command line reports it as one).
    """
    try:
        trainer.fit(encoder, datamodule=datamodule, ckpt_path=resume)
    except SystemExit:
        if not trainer.interrupted:
            raise
        # Lightning ignores further Ctrl-C after its shutdown; give the default handler back
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if on_fitted is not None:
        on_fitted(trainer)
    if test_after_fit and not trainer.fast_dev_run:
        results = trainer.test(encoder, datamodule=datamodule, ckpt_path=best_checkpoint(trainer))
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    return metrics
