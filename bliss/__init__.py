"""BLISS: the Bayesian Light Source Separator."""

import hashlib
from importlib.metadata import PackageNotFoundError, version

from omegaconf import OmegaConf

try:
    __version__ = version("bliss-toolkit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# `${len:${survey.bands}}` sizes per-band layers from the survey in config files
OmegaConf.register_new_resolver("len", lambda value: len(value), replace=True)

__all__ = ["__version__"]

# `${pkg_path:models/x.ckpt}`: a file shipped inside the installed package
OmegaConf.register_new_resolver(
    "pkg_path",
    lambda relative: str(__import__("pathlib").Path(__file__).parent / relative),
    replace=True,
)


def _run_name(mode: str, experiment: str | None, overrides: str, timestamp: str) -> str:
    """A run directory's name: for training, the same command names the same directory.

    ``<experiment>-<8 hex digits of the sorted command-line overrides>``, so that running the
    same ``bliss mode=train ...`` again after a crash, a kill or a timeout continues that run
    (``train.resume=auto``); other modes get a new ``<date>_<time>`` directory each time.
    """
    if mode != "train":
        return timestamp
    return f"{experiment or 'train'}-{hashlib.sha256(overrides.encode()).hexdigest()[:8]}"


# `${run_name:...}` in hydra.run.dir (bliss/conf/config.yaml)
OmegaConf.register_new_resolver("run_name", _run_name, replace=True)
