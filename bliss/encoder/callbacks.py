"""Checkpoint callbacks and the CSV logger of a run that can be killed and resumed.

Lightning's ``ModelCheckpoint`` with a ``monitor`` holds back every save, ``last.ckpt``
included, until the monitored metric exists, i.e. until the first validation: a run killed
before it loses everything. bliss therefore keeps two callbacks (``bliss/conf/callbacks``):
:class:`LastCheckpoint`, with no monitor, writes ``last.ckpt`` every ``every_n_train_steps`` from
the first step and at the end; a monitored ``ModelCheckpoint`` keeps ``best.ckpt``, written after
each validation that improves ``val/loss``. :class:`RecordConfig` puts the run's config in
every checkpoint, which makes it self-describing (:mod:`bliss.encoder.checkpoint`).

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it starts in a directory that has one;
:class:`ResumableCSVLogger` appends to it instead, so a resumed run's history is whole.
"""

import csv
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.loggers.csv_logs import _ExperimentWriter
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from bliss.encoder.checkpoint import CONFIG_KEY

__all__ = ["LastCheckpoint", "RecordConfig", "ResumableCSVLogger"]


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps, validation or not, and at the end.

    The ``last.ckpt`` it replaces stays as ``previous.ckpt`` (a hard link: no copy), so that when
    the weights just saved turn out to diverge, the checkpoint before them is still there
    (:meth:`good_checkpoint`).

    Args:
        dirpath: the checkpoint directory.
        every_n_train_steps: steps between two saves (at most this many are lost to a kill).
        **kwargs: other ``ModelCheckpoint`` arguments; ``monitor`` must stay None.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 200, **kwargs: Any) -> None:
        kwargs = {"monitor": None, "save_top_k": 0, "save_last": True, **kwargs}
        # one last.ckpt, never last-v1.ckpt beside an old one: train.resume=auto finds it
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, **kwargs)

    PREVIOUS = "previous.ckpt"

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the final state unless the last save was at this step."""
        if trainer.fast_dev_run or self._last_global_step_saved == trainer.global_step:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        last = Path(self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST))
        if trainer.is_global_zero and last.is_file():
            previous, tmp = last.with_name(self.PREVIOUS), last.with_name(f".{self.PREVIOUS}.tmp")
            try:  # Lightning writes last.ckpt anew (a new inode): the link keeps the old bytes
                tmp.unlink(missing_ok=True)
                os.link(last, tmp)
                os.replace(tmp, previous)
            except OSError:  # no hard links here: last.ckpt alone, as Lightning keeps it
                tmp.unlink(missing_ok=True)
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def good_checkpoint(self, global_step: int) -> str | None:
        """The newest checkpoint whose weights gave a finite loss, when step ``global_step`` failed.

        The weights saved at step ``s`` are those the forward pass of step ``s`` uses; so when
        that pass fails, ``last.ckpt`` holds the failing weights and ``previous.ckpt`` is the
        newest good one.
        """
        if not self.last_model_path:
            return None
        last = Path(self.last_model_path)
        if self._last_global_step_saved != global_step:
            return str(last) if last.is_file() else None
        previous = last.with_name(self.PREVIOUS)
        return str(previous) if previous.is_file() else None

    def state_dict(self) -> dict[str, Any]:
        """Lightning's state, plus the step of the last save (for :meth:`good_checkpoint`)."""
        return {**super().state_dict(), "last_saved_step": self._last_global_step_saved}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state, with the step of the last save."""
        super().load_state_dict(state_dict)
        self._last_global_step_saved = int(state_dict.get("last_saved_step", 0))


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, appending to an existing ``metrics.csv``.

    Rows of steps the resumed run logs again (those after the checkpoint it continues from)
    replace the old ones, so each step appears once.
    """

    def _check_log_dir_exists(self) -> None:
        self._resumed_rows: list[dict[str, str]] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as stream:
                reader = csv.DictReader(stream)
                self._resumed_rows = list(reader)
                # the file's column order, so that appended rows line up with its header
                self.metrics_keys = list(reader.fieldnames or [])

    def save(self) -> None:
        """Write the pending rows; the first save of a resumed run drops the superseded ones."""
        if self._resumed_rows is not None and self.metrics:
            first = min(int(m["step"]) for m in self.metrics)
            kept = [row for row in self._resumed_rows if _step(row) < first]
            if len(kept) < len(self._resumed_rows):
                with self._fs.open(self.metrics_file_path, "w", newline="") as stream:
                    writer = csv.DictWriter(stream, fieldnames=self.metrics_keys)
                    writer.writeheader()
                    writer.writerows(kept)
            self._resumed_rows = None
        super().save()


def _step(row: dict[str, str]) -> int:
    try:
        return int(float(row.get("step") or -1))
    except ValueError:
        return -1


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that continues ``metrics.csv`` across resumes and flushes at checkpoints.

    Rows are also written whenever a checkpoint is saved, so the history up to the checkpoint a
    killed run resumes from is on disk.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> _ExperimentWriter:
        """The appending writer (rank zero only, as Lightning's)."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Flush the rows logged so far."""
        self.save()


class RecordConfig(pl.Callback):
    """Store the composed run config in every checkpoint under ``bliss_config``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Add the config to the checkpoint dict."""
        checkpoint[CONFIG_KEY] = self.config
