"""hydra-submitit-launcher's SLURM launcher with bliss's checks (needs the ``slurm`` extra).

Hydra loads launchers only from the ``hydra_plugins`` namespace package, so the class lives here
and ``hydra/launcher=slurm`` names it; the checks themselves are :mod:`bliss.cli.slurm`.
Hydra imports every ``hydra_plugins`` module when it starts: without the ``slurm`` extra this
module defines nothing.
"""

from collections.abc import Sequence
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # the `slurm` extra is not installed; hydra/launcher=slurm says so
    SlurmLauncher = None

__all__ = ["CheckedSlurmLauncher"]

if SlurmLauncher is not None:

    class CheckedSlurmLauncher(SlurmLauncher):
        """Checks every job of a sweep (:func:`bliss.cli.slurm.check_slurm_job`), then submits.

        On a timeout, submitit requeues a job with the same overrides and run directory;
        ``train.resume=auto`` then continues from the run's ``checkpoints/last.ckpt``.
        """

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
            """Compose and check each job's config; submit only if all pass."""
            from bliss.cli.slurm import check_slurm_job

            for overrides in job_overrides:
                job = self.hydra_context.config_loader.load_sweep_config(
                    self.config, list(overrides)
                )
                check_slurm_job(job)
            return super().launch(job_overrides, initial_job_idx)
