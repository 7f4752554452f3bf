"""hydra-submitit-launcher's SLURM launcher with bliss's checks (needs the ``slurm`` extra)."""

from collections.abc import Sequence
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from bliss.launch import check_slurm_job

__all__ = ["CheckedSlurmLauncher"]


class CheckedSlurmLauncher(SlurmLauncher):
    """Checks every job of a sweep (:func:`~bliss.launch.check_slurm_job`), then submits them.

    On a timeout, submitit requeues a job with the same overrides and run directory;
    ``train.resume=auto`` then continues from the run's ``checkpoints/last.ckpt``.
    """

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        """Compose and check each job's config; submit only if all pass."""
        for overrides in job_overrides:
            job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            check_slurm_job(job)
        return super().launch(job_overrides, initial_job_idx)
