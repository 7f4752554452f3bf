"""Run directories: the ``latest`` link of each mode.

``<paths.output>/<mode>/latest`` points at the mode's most recent run directory (a training run's
``checkpoints/`` is then ``outputs/train/latest/checkpoints``). It is replaced atomically, only
by the first process of a run, and only for run directories in the default layout
(``<paths.output>/<mode>/<name>``): an explicit ``hydra.run.dir`` elsewhere is left alone.
"""

import os
from pathlib import Path

from omegaconf import DictConfig

__all__ = ["LATEST", "link_latest"]

LATEST = "latest"
#: environment variables a launcher sets in every process but the first (Lightning DDP, SLURM)
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def _first_process() -> bool:
    return all(os.environ.get(name, "0") in ("", "0") for name in _RANK_VARIABLES)


def link_latest(cfg: DictConfig) -> Path | None:
    """Point ``<paths.output>/<mode>/latest`` at this run's directory.

    Returns:
        The link, or None when the run directory is elsewhere, unknown (a config composed
        without Hydra's runtime) or this is not the first process.
    """
    try:
        run_dir = Path(cfg.paths.run_dir).resolve()
        mode_dir = (Path(cfg.paths.output) / str(cfg.mode)).resolve()
    except Exception:  # no Hydra runtime names the run directory (a composed config): no link
        return None
    if run_dir.parent != mode_dir or not _first_process():
        return None
    link = mode_dir / LATEST
    tmp = mode_dir / f".{LATEST}.{os.getpid()}"
    try:
        mode_dir.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(tmp, link)  # a reader sees the old link or the new one, never none
    except OSError:  # a file system without symlinks: the link is a convenience
        tmp.unlink(missing_ok=True)
        return None
    return link
