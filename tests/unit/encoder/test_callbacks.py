"""last.ckpt from the first step, previous.ckpt after a divergence, and a CSV log that continues."""

import csv
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel

from bliss.encoder.callbacks import LastCheckpoint, ResumableCSVLogger


def _fit(tmp_path: Path, max_steps: int, every_n: int, resume: str | None = None) -> LastCheckpoint:
    callback = LastCheckpoint(dirpath=str(tmp_path / "checkpoints"), every_n_train_steps=every_n)
    trainer = pl.Trainer(
        max_steps=max_steps,
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,  # no validation at all: last.ckpt must not wait for one
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel(), ckpt_path=resume)
    return callback


def _step(path: Path | str) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def test_last_is_saved_every_n_steps_and_at_the_end_and_keeps_the_previous(tmp_path) -> None:
    callback = _fit(tmp_path, max_steps=5, every_n=2)
    last, previous = (
        tmp_path / "checkpoints" / "last.ckpt",
        tmp_path / "checkpoints" / "previous.ckpt",
    )
    assert _step(last) == 5 and _step(previous) == 4
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "previous.ckpt"]
    # the forward pass of step 5 uses last.ckpt's weights: if it fails, previous.ckpt is good
    assert callback.good_checkpoint(5) == str(previous)
    assert callback.good_checkpoint(6) == str(last)


def test_the_step_of_the_last_save_survives_a_resume(tmp_path) -> None:
    _fit(tmp_path, max_steps=4, every_n=2)
    callback = _fit(
        tmp_path, max_steps=6, every_n=2, resume=str(tmp_path / "checkpoints" / "last.ckpt")
    )
    assert callback.good_checkpoint(6).endswith("previous.ckpt")


def _rows(logger: ResumableCSVLogger) -> list[dict[str, str]]:
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def test_the_csv_log_continues_and_replaces_steps_logged_again(tmp_path) -> None:
    first = ResumableCSVLogger(tmp_path, name="csv", version="")
    for step in range(6):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.save()
    # killed after step 5; the run resumes from the checkpoint of step 3
    second = ResumableCSVLogger(tmp_path, name="csv", version="")
    for step in range(3, 8):
        second.log_metrics({"train/loss": 10.0 + step, "val/loss": 1.0}, step=step)
    second.save()

    rows = _rows(second)
    assert [int(r["step"]) for r in rows] == list(range(8))
    assert [float(r["train/loss"]) for r in rows[:3]] == [0.0, 1.0, 2.0]  # kept
    assert float(rows[3]["train/loss"]) == 13.0  # logged again: the resumed run's
    assert rows[0]["val/loss"] == "" and rows[-1]["val/loss"] == "1.0"  # a new column


def test_rows_are_flushed_when_a_checkpoint_is_saved(tmp_path) -> None:
    logger = ResumableCSVLogger(tmp_path, name="csv", version="", flush_logs_every_n_steps=1000)
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.after_save_checkpoint(None)
    assert len(_rows(logger)) == 1
