"""Aperture corrections of a real frame: the light of its stars that the psField PSF leaves out.

A model trained on images drawn with psField PSFs measures a star as the psField PSF scaled to
its core. Real stars put more light in their wings than the psField's KL reconstruction (on
94-1-12, r band: 95.5 % of the light within 7.43" falls within 3", against 98.5 % for the psField
PSF), so such a model reports 4-5 % too little flux, 0.05 mag fainter than PHOTO's ``psfMag``,
which PHOTO calibrates to the flux in a 7.43" radius aperture. This module measures the same
correction PHOTO applies, from the frame's own stars: the median ratio of the 7.43" aperture flux
to the PSF fit of bright, isolated, unmasked point sources, where the PSF is the one the model was
trained on (the psField PSF, plus the halo of ``simulator.conditions.observed.halo`` if any).

References:
    Stoughton, C. et al. 2002, AJ 123, 485, section 4.4.5.2 (PSF magnitudes and their aperture
    correction).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sep
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["ApertureCorrection", "aperture_correction", "find_point_sources", "sky_subtracted"]

#: PHOTO's aperture for PSF magnitudes, arcsec
PHOTO_APERTURE_ARCSEC = 7.43
#: radius within which the psField PSF is fitted to a star, arcsec
FIT_RADIUS_ARCSEC = 3.0
#: fewest stars for a correction; with fewer the correction is 1 (none)
MIN_STARS = 5


@dataclass(frozen=True)
class ApertureCorrection:
    """Multiply fluxes measured against the PSF model by ``factor`` (1: no correction).

    Attributes:
        factor: median aperture flux over PSF-fit flux of the stars used.
        n_stars: how many stars gave it.
        spread: half the interquartile range of the stars' ratios.
    """

    factor: float
    n_stars: int
    spread: float


def find_point_sources(
    light: np.ndarray,
    masked: np.ndarray,
    sky: np.ndarray,
    pixel_scale_arcsec: float,
    psf_concentration: float,
    min_snr: float = 100.0,
    isolation_arcsec: float = 10.0,
) -> np.ndarray:
    """Bright, isolated, unmasked, star-like sources of one band, as ``(row, col)`` pixels.

    Args:
        light: electrons above the sky, 0 where masked (:func:`sky_subtracted`). Shape ``h w``.
        masked: missing pixels. Shape ``h w`` (bool).
        sky: sky electrons per pixel. Shape ``h w``.
        pixel_scale_arcsec: pixel side.
        psf_concentration: fraction of the PSF's 7.43" light within 3"; a source is star-like
            when its own fraction is at least this minus 0.07 (real stars sit ~0.03 below the
            psField PSF, galaxies far lower).
        min_snr: lowest signal-to-noise ratio in the 3" aperture (Poisson noise of sky + star).
        isolation_arcsec: no other detection within this distance.

    Returns:
        Positions. Shape ``n 2``.
    """
    noise = np.sqrt(np.clip(np.where(masked, 0.0, sky), 1.0, None))
    sep.set_extract_pixstack(max(300_000, light.size))  # a globular cluster fills sep's default
    sep.set_sub_object_limit(4096)
    objects = sep.extract(light, 10.0, err=noise, mask=masked, minarea=5)
    if not len(objects):
        return np.zeros((0, 2))
    rows, cols = objects["y"], objects["x"]
    aperture = PHOTO_APERTURE_ARCSEC / pixel_scale_arcsec
    inner, _, _ = sep.sum_circle(light, cols, rows, FIT_RADIUS_ARCSEC / pixel_scale_arcsec)
    outer, _, flags = sep.sum_circle(light, cols, rows, aperture, mask=masked)
    sky_in_fit = np.pi * (FIT_RADIUS_ARCSEC / pixel_scale_arcsec) ** 2 * np.median(sky)
    snr = inner / np.sqrt(np.clip(inner, 0.0, None) + sky_in_fit)
    # masked pixels anywhere in the aperture (saturated cores, cosmic rays) disqualify a star
    near_mask = ndimage.binary_dilation(masked, iterations=int(np.ceil(aperture)) + 1)
    at = (rows.round().astype(int), cols.round().astype(int))
    height, width = light.shape
    margin = aperture + 2
    inside = (rows > margin) & (rows < height - margin) & (cols > margin) & (cols < width - margin)
    positions = np.stack([rows, cols], axis=-1)
    if len(positions) > 1:
        nearest, _ = cKDTree(positions).query(positions, k=2)  # [:, 0] is the source itself
        isolated = nearest[:, 1] > isolation_arcsec / pixel_scale_arcsec
    else:
        isolated = np.ones(len(positions), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        concentration = inner / outer
    keep = (
        (snr >= min_snr)
        & (flags == 0)
        & inside
        & isolated
        & ~near_mask[at]
        & (concentration >= psf_concentration - 0.07)
        & (concentration <= 1.0)
    )
    return np.stack([rows[keep], cols[keep]], axis=-1)


def aperture_correction(
    image: np.ndarray,
    sky: np.ndarray,
    psf: Callable[[float, float], np.ndarray],
    pixel_scale_arcsec: float,
    stars: np.ndarray | None = None,
) -> ApertureCorrection:
    """The flux correction of one band: median of 7.43" aperture flux / PSF-model fit flux.

    Args:
        image: electrons with the sky, NaN where masked. Shape ``h w``.
        sky: sky electrons per pixel. Shape ``h w``.
        psf: ``(row, col) -> PSF image`` (odd side, centred, sum 1) at a pixel of ``image``.
        pixel_scale_arcsec: pixel side.
        stars: ``(row, col)`` of the stars to use [default: :func:`find_point_sources`]. Shape
            ``n 2``.

    Returns:
        The correction; ``factor`` 1 when fewer than :data:`MIN_STARS` stars qualify.
    """
    light, masked = sky_subtracted(image, sky)
    if stars is None:
        h, w = light.shape
        concentration = _concentration(psf(h / 2, w / 2), pixel_scale_arcsec)
        stars = find_point_sources(light, masked, sky, pixel_scale_arcsec, concentration)
    ratios = []
    aperture = PHOTO_APERTURE_ARCSEC / pixel_scale_arcsec
    for row, col in stars:
        total, _, _ = sep.sum_circle(light, [col], [row], [aperture])
        fitted = _psf_fit(light, psf(row, col), row, col, FIT_RADIUS_ARCSEC / pixel_scale_arcsec)
        if fitted > 0:
            ratios.append(total[0] / fitted)
    if len(ratios) < MIN_STARS:
        return ApertureCorrection(1.0, len(ratios), float("nan"))
    low, median, high = np.percentile(ratios, [25, 50, 75])
    return ApertureCorrection(float(median), len(ratios), float((high - low) / 2))


def sky_subtracted(image: np.ndarray, sky: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Electrons above the sky (float64, 0 where masked) and the mask of missing pixels."""
    light = np.ascontiguousarray(image - sky, dtype=np.float64)
    masked = ~np.isfinite(light)
    light[masked] = 0.0
    return light, masked


def _concentration(psf: np.ndarray, pixel_scale_arcsec: float) -> float:
    """Fraction of a centred PSF image's 7.43" light within 3"."""
    center = (psf.shape[1] - 1) / 2, (psf.shape[0] - 1) / 2
    image = np.ascontiguousarray(psf, dtype=np.float64)
    radii = np.array([FIT_RADIUS_ARCSEC, PHOTO_APERTURE_ARCSEC]) / pixel_scale_arcsec
    flux, _, _ = sep.sum_circle(image, [center[0]] * 2, [center[1]] * 2, radii)
    return float(flux[0] / flux[1])


def _psf_fit(light: np.ndarray, psf: np.ndarray, row: float, col: float, radius: float) -> float:
    """Least-squares amplitude of ``psf`` (sum 1) shifted to ``(row, col)``, within ``radius``."""
    half = psf.shape[0] // 2
    r0, c0 = int(round(row)), int(round(col))
    cut = light[r0 - half : r0 + half + 1, c0 - half : c0 + half + 1]
    if cut.shape != psf.shape:
        return float("nan")
    shifted = ndimage.shift(psf.astype(np.float64), (row - r0, col - c0), order=3)
    grid = np.arange(psf.shape[0]) - half
    distance = np.hypot(grid[:, None] - (row - r0), grid[None, :] - (col - c0))
    inside = distance < radius
    model = shifted[inside]
    return float((model * cut[inside]).sum() / (model**2).sum())
