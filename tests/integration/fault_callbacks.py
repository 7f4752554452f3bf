"""Callbacks that inject faults into a training run, named on the command line by tests.

They are inert unless an environment variable asks for the fault, so that a test can run the
very same command twice (once with the fault, once without), as a user reruns a killed job.
"""

import os
import time
from pathlib import Path

import pytorch_lightning as pl

STALL_AT = "BLISS_TEST_STALL_AT"  # global step after which the run stalls (to be killed)
STALLED = "stalled"  # file written in the run directory once the run stalls


class StallAt(pl.Callback):
    """Once ``$BLISS_TEST_STALL_AT`` steps are done, write ``<run dir>/stalled`` and hang.

    The test then kills the process with SIGKILL: a deterministic point for a kill -9.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        step = os.environ.get(STALL_AT)
        if step is None or trainer.global_step < int(step):
            return
        Path(trainer.default_root_dir, STALLED).write_text(str(trainer.global_step))
        time.sleep(600)


class InterruptAt(pl.Callback):
    """Raise KeyboardInterrupt (as Ctrl-C does) after ``step`` training steps."""

    def __init__(self, step: int = 1) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt
