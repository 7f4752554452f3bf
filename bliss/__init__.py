"""BLISS: the Bayesian Light Source Separator."""

from importlib.metadata import PackageNotFoundError, version

from omegaconf import OmegaConf

try:
    __version__ = version("bliss")
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
