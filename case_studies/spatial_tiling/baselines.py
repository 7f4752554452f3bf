"""The crowded-field baselines: sep (SExtractor) and DAOPHOT-style iterative PSF photometry.

Both take one band of one image in electrons with the sky included, and return positions
``n 2`` (pixels, ``(row, col)``, the centre of the first pixel at ``(0.5, 0.5)`` like BLISS's
``plocs``) and fluxes in electrons.
"""

import warnings

import numpy as np

from bliss.catalog.io import xy_to_plocs

__all__ = ["daophot_catalog", "sep_catalog"]


def sep_catalog(
    image: np.ndarray,
    sky: float | np.ndarray,
    threshold_sigma: float = 3.0,
    aperture_px: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``sep.extract`` on the sky-subtracted image, with aggressive deblending, then apertures."""
    import sep

    data = np.ascontiguousarray(image - sky, dtype=np.float64)
    error = np.sqrt(np.clip(image, 1.0, None)).astype(np.float64)
    sep.set_extract_pixstack(2_000_000)
    objects = sep.extract(
        data, threshold_sigma, err=error, minarea=3, deblend_nthresh=64, deblend_cont=1e-4
    )
    if len(objects) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    flux, _, _ = sep.sum_circle(data, objects["x"], objects["y"], aperture_px, err=error)
    return xy_to_plocs(objects["x"], objects["y"]), flux


def daophot_catalog(
    image: np.ndarray,
    sky: float | np.ndarray,
    psf: np.ndarray,
    fwhm_px: float,
    threshold_sigma: float = 3.0,
    iterations: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """photutils ``IterativePSFPhotometry``: find, fit the PSF in groups, subtract, find again.

    The DAOPHOT recipe: ``DAOStarFinder`` at ``threshold_sigma`` times the noise, stars closer
    than 1.5 FWHM fitted together (``SourceGrouper``), ``iterations`` passes on the residual
    image. Fits with a non-positive flux are dropped. ``psf`` is the true PSF image (odd side,
    sum 1) at the image's pixel scale.
    """
    from photutils.detection import DAOStarFinder
    from photutils.psf import ImagePSF, IterativePSFPhotometry, SourceGrouper

    data = (image - sky).astype(np.float64)
    error = np.sqrt(np.clip(image, 1.0, None))
    noise = float(np.sqrt(np.median(sky)))  # sky: a level or a map
    half = psf.shape[0] // 2
    model = ImagePSF(psf / psf.sum(), x_0=half, y_0=half)
    finder = DAOStarFinder(threshold=threshold_sigma * noise, fwhm=fwhm_px, min_separation=1.0)
    fit_side = int(2 * round(fwhm_px) + 1) | 1
    photometry = IterativePSFPhotometry(
        model,
        (fit_side, fit_side),
        finder,
        grouper=SourceGrouper(min_separation=1.5 * fwhm_px),
        aperture_radius=fwhm_px,
        maxiters=iterations,
        mode="new",
        group_warning_threshold=10**6,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fit-convergence chatter on blended groups
        table = photometry(data, error=error)
    if table is None or len(table) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    plocs = xy_to_plocs(np.asarray(table["x_fit"]), np.asarray(table["y_fit"]))
    flux = np.asarray(table["flux_fit"], dtype=np.float64)
    # a non-positive flux is a failed fit of a spurious detection, with no magnitude
    good = np.isfinite(plocs).all(1) & np.isfinite(flux) & (flux > 0)
    return plocs[good], flux[good]
