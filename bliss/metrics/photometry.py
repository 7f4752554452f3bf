"""The physical limit of photometry: the Cramer-Rao bound on a point source's flux."""

import numpy as np

from bliss.errors import BlissValueError

__all__ = ["flux_cramer_rao_std"]


def flux_cramer_rao_std(
    psf: np.ndarray, sky_electrons: float | np.ndarray, flux_electrons: float
) -> float:
    """Smallest standard deviation an unbiased flux estimate of an isolated star can have.

    With a known position and PSF, pixel ``i`` holds Poisson counts of mean
    ``mu_i = sky_i + flux * psf_i`` (electrons, so the gain is folded in), and the Fisher
    information on the flux is ``sum_i psf_i**2 / mu_i``; the bound is its inverse square root.
    A PSF fit reaches it for bright stars; no estimator does better.

    Args:
        psf: the pixel-integrated PSF at the star, normalised to sum 1 over the whole plane
            (a stamp that cuts wings off only loses information). Shape ``h w``.
        sky_electrons: sky per pixel, electrons (scalar or ``h w``).
        flux_electrons: the star's flux, electrons.

    Returns:
        The bound, electrons.

    Raises:
        BlissValueError: a negative flux, a non-positive sky, or a PSF with negative pixels.

    Example:
        >>> psf = np.full((3, 3), 1 / 9)
        >>> round(flux_cramer_rao_std(psf, sky_electrons=100.0, flux_electrons=0.0), 3)
        30.0
    """
    psf = np.asarray(psf, dtype=np.float64)
    sky = np.broadcast_to(np.asarray(sky_electrons, dtype=np.float64), psf.shape)
    if flux_electrons < 0 or not np.isfinite(flux_electrons):
        raise BlissValueError(f"flux_electrons={flux_electrons}; expected a finite flux >= 0.")
    if not (sky > 0).all():
        raise BlissValueError(f"sky_electrons has values <= 0 (min {sky.min()}); expected > 0.")
    if (psf < 0).any():
        raise BlissValueError("psf has negative pixels; expected a pixel-integrated PSF >= 0.")
    information = float((psf**2 / (sky + flux_electrons * psf)).sum())
    return float(1.0 / np.sqrt(information))
