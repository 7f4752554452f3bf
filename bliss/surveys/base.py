"""Survey-side helpers shared by the PSF models (:mod:`bliss.surveys.psfex`, :mod:`bliss.surveys.sdss.psf`)."""

import math
from collections.abc import Mapping

import numpy as np

from bliss.errors import BlissValueError
from bliss.protocols import PsfModel

__all__ = ["psf_images_at"]


def psf_images_at(
    psfs: Mapping[str, PsfModel], row: float, col: float, pixel_scale_arcsec: float
) -> dict[str, np.ndarray]:
    """PSF images for ``ImageSimulator(psf_images=...)``: each band's model at one position.

    Args:
        psfs: band -> PSF model.
        row: frame row at which every model is evaluated (0-indexed).
        col: frame column.
        pixel_scale_arcsec: the survey's pixel side, arcsec; the simulator takes the images at
            this scale, so every model must have it (within 1%).

    Returns:
        band -> PSF image, sum 1. Shape ``h w`` each.

    Raises:
        BlissValueError: a model's pixel scale differs from ``pixel_scale_arcsec``.
    """
    for band, psf in psfs.items():
        if not math.isclose(psf.pixel_scale_arcsec, pixel_scale_arcsec, rel_tol=0.01):
            raise BlissValueError(
                f"the {band}-band PSF model has pixel_scale_arcsec={psf.pixel_scale_arcsec} but the "
                f"survey has {pixel_scale_arcsec}; the simulator takes PSF images at the survey's "
                "pixel scale. Build the model with the survey's scale or use a survey preset for it."
            )
    return {band: psf.image(row, col) for band, psf in psfs.items()}
