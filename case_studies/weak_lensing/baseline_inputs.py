"""The input checks the two shear baselines share: one band of one image, and its PSF."""

import math

import numpy as np

from bliss.errors import BlissShapeError, BlissValueError

__all__ = ["checked_image_and_psf", "require_positive"]

#: how far from 1 a PSF image's sum may be (a drawn PSF loses its far wings)
PSF_SUM_TOLERANCE = 0.05


def checked_image_and_psf(
    image: np.ndarray, psf_image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The image (as given) and the PSF as float64 normalised to unit sum, after checking both.

    Raises:
        BlissShapeError: either is not 2-D.
        BlissValueError: the image has non-finite pixels, the PSF an even side or a sum far from 1.
    """
    image = np.asarray(image)
    psf_image = np.asarray(psf_image, dtype=np.float64)
    if image.ndim != 2:
        raise BlissShapeError(
            f"image has shape {image.shape}; expected one band `h w` (2-D). Pass one band of "
            "one image at a time."
        )
    if not np.all(np.isfinite(image)):
        raise BlissValueError("image has NaN or infinite pixels; mask or fill them first.")
    if psf_image.ndim != 2:
        raise BlissShapeError(f"psf_image has shape {psf_image.shape}; expected a 2-D image.")
    if psf_image.shape[0] % 2 == 0 or psf_image.shape[1] % 2 == 0:
        raise BlissValueError(
            f"psf_image has shape {psf_image.shape}; expected odd sides so that the PSF centre "
            "is the central pixel (draw it with an odd nx, ny)."
        )
    psf_sum = float(psf_image.sum())
    if abs(psf_sum - 1.0) > PSF_SUM_TOLERANCE:
        raise BlissValueError(
            f"psf_image sums to {psf_sum:.4g}; expected 1 (within {PSF_SUM_TOLERANCE}): pass "
            "the pixel-convolved PSF normalised to unit flux."
        )
    return image, psf_image / psf_sum


def require_positive(name: str, value: float, meaning: str) -> None:
    """Raise naming ``name`` unless ``value`` is a finite positive number (``meaning`` says what)."""
    if not (math.isfinite(value) and value > 0):
        raise BlissValueError(f"{name}={value!r}; expected {meaning}.")
