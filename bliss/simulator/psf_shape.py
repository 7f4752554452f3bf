"""PSF shape beyond its width: ellipticity and wings, from a PSF image's adaptive moments.

Two PSFs with one FWHM can still blur sources differently: an elongated PSF stretches every
star along one axis, and a PSF with broad wings (a Moffat of small ``beta``) spreads more of a
source's light away from its core. A network told only the FWHM cannot tell these apart, so a
PSF-aware model can also be given three descriptors per band:

* ``e1``, ``e2``: the distortion ``(1 - q^2) / (1 + q^2)`` of the PSF's adaptive-moment ellipse
  (GalSim HSM), spin 2, ``(cos 2 phi, sin 2 phi)`` components with ``phi`` measured from the
  +col axis towards +row;
* ``rho4``: the Gaussian-weighted fourth radial moment of that fit, 2 for a Gaussian and larger
  for profiles with more light in their wings (2.05 for a Moffat with ``beta = 10``, 2.14 for
  ``beta = 3.5``, 2.26 for ``beta = 2``). It does not depend on the PSF's size.
"""

import galsim
import numpy as np

from bliss.errors import BlissValueError

__all__ = ["PSF_SHAPE_NAMES", "moffat_psf_shape", "psf_shape"]

PSF_SHAPE_NAMES = ("e1", "e2", "rho4")


def psf_shape(images: np.ndarray, pixel_scale_arcsec: float = 1.0) -> np.ndarray:
    """``(e1, e2, rho4)`` of every PSF image.

    Args:
        images: PSF images (any flux), centred near their middle pixel. Shape ``... h w``.
        pixel_scale_arcsec: their pixel size; the descriptors do not depend on it.

    Returns:
        Shape ``... 3``, float32.

    Raises:
        BlissValueError: an image has non-finite pixels or the moments fit fails on it
            (e.g. an empty image).

    Example:
        >>> image = galsim.Gaussian(fwhm=1.0).shear(e1=0.1, e2=0.0).drawImage(nx=25, ny=25, scale=0.2)
        >>> np.round(psf_shape(image.array, 0.2), 2)
        array([0.1, 0. , 2. ], dtype=float32)
    """
    array = np.asarray(images, dtype=np.float64)
    if array.ndim < 2:
        raise BlissValueError(f"psf_shape: images of shape {array.shape}; expected ... h w.")
    flat = array.reshape(-1, *array.shape[-2:])
    out = np.empty((len(flat), 3), dtype=np.float32)
    for index, image in enumerate(flat):
        if not np.all(np.isfinite(image)):
            raise BlissValueError(
                f"psf_shape: PSF image {index} has non-finite pixels; expected a finite PSF."
            )
        try:
            moments = galsim.hsm.FindAdaptiveMom(galsim.Image(image, scale=pixel_scale_arcsec))
        except galsim.GalSimError as err:
            raise BlissValueError(
                f"psf_shape: the adaptive-moments fit failed on PSF image {index} ({err}); "
                "expected a centred PSF with positive flux."
            ) from err
        shape = moments.observed_shape
        out[index] = (shape.e1, shape.e2, moments.moments_rho4)
    return out.reshape(*array.shape[:-2], 3)


def moffat_psf_shape(
    beta: float, fwhm_arcsec: float = 1.4, pixel_scale_arcsec: float = 0.4
) -> np.ndarray:
    """The descriptors of a round Moffat PSF (a survey's nominal PSF). Shape ``3``."""
    image = galsim.Moffat(beta=beta, fwhm=fwhm_arcsec).drawImage(
        nx=51, ny=51, scale=pixel_scale_arcsec
    )
    return psf_shape(image.array, pixel_scale_arcsec)
