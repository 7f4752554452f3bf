"""The classical shear-map baseline: GalSim HSM (REGAUSS) ellipticities averaged per coarse region.

:func:`hsm_region_shear` detects sources with ``sep``, measures each one's PSF-corrected shape
with GalSim's re-Gaussianization (REGAUSS) and averages the per-galaxy shear estimates over
square regions of ``region_px`` pixels: the "smoothed galaxy ellipticity" map that the neural
posterior's per-tile shear maps are compared with.

REGAUSS returns a distortion ``e = (a^2 - b^2) / (a^2 + b^2) (cos 2 beta, sin 2 beta)``, not a
reduced shear ``g = (a - b) / (a + b) (...)``. Under a weak shear an ensemble of distortions
moves by ``<e> = 2 R g`` with the responsivity ``R = 1 - e_rms^2``, where ``e_rms`` is the
per-component RMS of the intrinsic DISTORTION (Bernstein & Jarvis 2002, section 5; the HSC
first-year catalog, Mandelbaum et al. 2018, eq. 8). Each galaxy's shear estimate is
``e / (2 R)``.

Conventions: positions are bliss's ``(row, col)`` pixels, pixel ``(i, j)`` covering
``[i, i + 1) x [j, j + 1)``. sep and the GalSim stamps here put pixel centres at integers with
``x`` = col and ``y`` = row, so ``(row, col) = (y + 0.5, x + 0.5)``. Shears are GalSim's
(``bliss.simulator.lensing``): ``g1 > 0`` stretches along the columns (``x``), ``g2 > 0`` along
the diagonal ``row = col``.

References:
    Hirata, C. & Seljak, U. 2003, MNRAS 343, 459 (re-Gaussianization).
    Bernstein, G. M. & Jarvis, M. 2002, AJ 123, 583 (distortions and their responsivity).
    Mandelbaum, R. et al. 2018, PASJ 70, S25 (HSC first-year shape catalog: the cuts below).
"""

import math
import numbers
import warnings
from typing import Literal

import galsim
import numpy as np
import sep
from baseline_inputs import checked_image_and_psf, require_positive

from bliss.errors import BlissValueError, BlissWarning
from bliss.evaluate.hsm import regauss_shapes

__all__ = ["distortion_rms", "hsm_region_shear"]

#: |e| must stay below this: REGAUSS distortions of noisy galaxies can exceed 1, and HSC keeps
#: |e| < 2 (Mandelbaum et al. 2018) so as not to cut the noise distribution asymmetrically
_MAX_DISTORTION = 2.0
#: the smallest stamp that holds a PSF-sized galaxy and some sky around it
_MIN_STAMP_PX = 9
#: shape_noise is a per-component RMS of |g| < 1: above this the Gaussian model is meaningless
_MAX_SHAPE_NOISE = 0.5


def distortion_rms(shape_noise: float) -> float:
    """The per-component RMS intrinsic distortion of a population with a given shape noise.

    ``shape_noise`` is the usual per-component RMS of the intrinsic ellipticity in SHEAR units,
    ``|g| = (1 - q) / (1 + q)`` for an axis ratio ``q`` (0.26 in the LSST DESC Science
    Requirements Document). The distortion ``|e| = 2 |g| / (1 + |g|^2)`` is not twice it for
    real ellipticities, so the conversion assumes Gaussian components of ``g`` with standard
    deviation ``shape_noise``, truncated at ``|g| < 1``, and integrates ``<e1^2>``. On the
    COSMOS parametric catalog (single-Sersic axis ratios, ``bliss.simulator.cosmos``, 81,448
    galaxies) the shear-unit RMS is 0.276 and this model gives 0.437 against the catalog's own
    0.440.

    Args:
        shape_noise: per-component RMS intrinsic ellipticity in shear units, in ``[0, 0.5]``.

    Returns:
        ``e_rms``, the per-component RMS intrinsic distortion (0.42 for 0.26).

    Raises:
        BlissValueError: ``shape_noise`` is outside ``[0, 0.5]``.
    """
    is_number = isinstance(shape_noise, numbers.Real) and not isinstance(shape_noise, bool)
    if not (is_number and 0 <= shape_noise <= _MAX_SHAPE_NOISE):
        raise BlissValueError(
            f"shape_noise={shape_noise!r}; expected the per-component RMS intrinsic ellipticity "
            f"in shear units, in [0, {_MAX_SHAPE_NOISE}] (e.g. 0.26), or 'measured'."
        )
    if shape_noise == 0:
        return 0.0
    # |g| is Rayleigh(shape_noise); beyond 10 sigma (or |g| = 1) there is no weight left
    radius = np.linspace(0.0, min(1.0, 10.0 * shape_noise), 4001)
    density = radius * np.exp(-0.5 * (radius / shape_noise) ** 2)
    distortion = 2 * radius / (1 + radius**2)
    mean_square = np.trapezoid(density * distortion**2, radius) / np.trapezoid(density, radius)
    return math.sqrt(mean_square / 2)


def _check_inputs(
    image: np.ndarray,
    background: float,
    psf_image: np.ndarray,
    pixel_scale_arcsec: float,
    detect_sigma: float,
    stamp_px: int,
    min_resolution: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The image as float64 and the PSF normalised to unit sum, after checking every input."""
    image, psf_image = checked_image_and_psf(image, psf_image)
    require_positive(
        "background",
        background,
        "the positive sky level in electrons per pixel (its Poisson variance is the pixel noise)",
    )
    require_positive("pixel_scale_arcsec", pixel_scale_arcsec, "a positive pixel side in arcsec")
    require_positive(
        "detect_sigma",
        detect_sigma,
        "a positive detection threshold in units of the sky noise (e.g. 5)",
    )
    is_int = isinstance(stamp_px, numbers.Integral) and not isinstance(stamp_px, bool)
    if not is_int or not _MIN_STAMP_PX <= stamp_px <= min(image.shape):
        raise BlissValueError(
            f"stamp_px={stamp_px!r}; expected an integer from {_MIN_STAMP_PX} to the image's "
            f"shorter side {min(image.shape)} (e.g. 25)."
        )
    if not 0 <= min_resolution < 1:
        raise BlissValueError(
            f"min_resolution={min_resolution!r}; expected a REGAUSS resolution factor in "
            "[0, 1) (0: keep PSF-sized sources, 0.3: HSC's cut)."
        )
    return np.ascontiguousarray(image, dtype=np.float64), psf_image


def _region_grid(shape: tuple[int, int], region_px: int | None) -> tuple[int, int, int, int]:
    """``(hr, wr, region_h, region_w)``: the number of regions per side and their sides (px)."""
    n_rows, n_cols = shape
    if region_px is None:
        return 1, 1, n_rows, n_cols
    is_int = isinstance(region_px, numbers.Integral) and not isinstance(region_px, bool)
    if not is_int or region_px <= 0 or n_rows % region_px or n_cols % region_px:
        common = math.gcd(n_rows, n_cols)
        divisors = [side for side in range(1, common + 1) if common % side == 0][-3:]
        raise BlissValueError(
            f"region_px={region_px!r} does not divide the image shape {shape}; expected a "
            f"positive integer that divides both sides (one of ... {divisors}), or None for the "
            "whole image; or crop the image to a multiple of region_px."
        )
    return n_rows // region_px, n_cols // region_px, region_px, region_px


def _measure_shapes(
    sky_subtracted: np.ndarray,
    background: float,
    psf: galsim.Image,
    pixel_scale_arcsec: float,
    detect_sigma: float,
    stamp_px: int,
    min_resolution: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``n 2`` (row, col), REGAUSS distortions ``n 2`` and their errors ``n``."""
    objects, segmentation = sep.extract(
        sky_subtracted, detect_sigma, err=math.sqrt(background), segmentation_map=True
    )
    centres = np.stack([objects["x"], objects["y"]], axis=1).astype(np.float64)
    distortions, errors = regauss_shapes(
        sky_subtracted,
        background,
        psf.array,
        pixel_scale_arcsec,
        centres,
        # pixels of other detections get zero weight, so neighbours do not bias the moments
        segmentation=segmentation,
        labels=np.arange(1, len(objects) + 1),
        guess_sigma_px=np.maximum(1.0, np.sqrt(objects["a"] * objects["b"])),
        stamp_px=stamp_px,
        min_resolution=min_resolution,
        max_distortion=_MAX_DISTORTION,
    )
    kept = np.isfinite(errors)
    # GalSim's corrected_shape_err underestimates REGAUSS's scatter: see hsm_region_shear
    return centres[kept, ::-1] + 0.5, distortions[kept], errors[kept]


def _measured_distortion_rms(distortions: np.ndarray, errors: np.ndarray) -> float:
    """Per-component RMS distortion about the mean, less the measurement noise (0 if negative)."""
    if len(distortions) < 2:
        return 0.0
    scatter = float(np.var(distortions, axis=0, ddof=1).mean())
    return math.sqrt(max(0.0, scatter - float(np.mean(errors**2))))


def hsm_region_shear(
    image: np.ndarray,
    background: float,
    psf_image: np.ndarray,
    pixel_scale_arcsec: float,
    region_px: int | None,
    *,
    detect_sigma: float = 5.0,
    stamp_px: int = 25,
    shape_noise: float | Literal["measured"] = 0.26,
    min_resolution: float = 0.3,
) -> dict[str, np.ndarray | float]:
    """Average REGAUSS shear estimates of the detected galaxies over square regions.

    Steps: ``sep.extract`` on ``image - background`` with ``err = sqrt(background)`` and
    threshold ``detect_sigma`` (sep's default 3 x 3 filter, 5-pixel minimum area and
    deblending); a ``stamp_px`` square stamp centred on the pixel of each detection's
    barycentre, skipped where it leaves the image; pixels of other detections (sep's
    segmentation map) masked out; ``galsim.hsm.EstimateShear(..., shear_est="REGAUSS",
    sky_var=background)``. A measurement is kept when HSM reports no error, both distortion
    components are finite, ``|e| < 2`` and the resolution factor is at least ``min_resolution``
    (the HSC first-year cuts; sources closer to the PSF size carry little shear information
    and the largest PSF-correction errors). Each kept galaxy's shear is ``e / (2 R)``; a region's
    shear is the unweighted mean over the galaxies whose barycentre lies in it. Deblended
    sources are kept (their neighbours are masked); stars that pass the resolution cut are not
    removed.

    The responsivity ``R = 1 - e_rms^2`` needs the per-component RMS of the intrinsic
    DISTORTION (the measured quantity), not of the shear-unit ellipticity that shape-noise
    figures usually quote:

    * a number: ``shape_noise`` in shear units (default 0.26, the LSST DESC SRD value; the
      COSMOS galaxies of the case study's prior have 0.276), converted by
      :func:`distortion_rms` (0.26 gives ``e_rms`` = 0.42, ``R`` = 0.82). Treating 0.26 as
      ``e_rms`` would give ``R`` = 0.93 and underestimate the shear by 12%. Pass 0 for
      intrinsically round galaxies (``R`` = 1).
    * ``"measured"``: ``e_rms^2`` is the per-component variance of this image's measured
      distortions less the mean squared measurement error (0 if negative), as HSC does. The
      error is twice GalSim's ``corrected_shape_err``, which underestimates REGAUSS's scatter
      (we measured 0.13 against 0.10 for an exponential of hlr 0.5 arcsec and 1e4 electrons on
      a sky of 1000, and 0.66 against 0.34 at 3e3 electrons),
      so faint samples overestimate ``e_rms`` and the shear. A single image holds few
      galaxies: to pool the estimate over images, take ``e`` and ``e_err`` from each result and
      average ``e / (2 R)`` yourself.

    Args:
        image: one band, shape ``h w``, in electrons, sky INCLUDED.
        background: the sky level (electrons per pixel); the noise is Poisson, so it is also
            the pixel variance used for detection and by HSM.
        psf_image: the pixel-convolved PSF at the same pixel scale, odd sides, centred on the
            central pixel, sum 1 (within 0.05; it is renormalised).
        pixel_scale_arcsec: pixel side in arcsec (HSM works in pixels; the scale is attached
            to the GalSim images).
        region_px: side of the square regions (px), dividing both image sides; None for one
            region covering the whole (possibly non-square) image.
        detect_sigma: detection threshold in units of the sky noise [default: 5].
        stamp_px: side of the measurement stamps (px) [default: 25, 5 arcsec at 0.2"/px].
        shape_noise: per-component RMS intrinsic ellipticity in shear units, or
            ``"measured"`` (see above) [default: 0.26].
        min_resolution: smallest REGAUSS resolution factor ``R2 = 1 - T_psf / T_gal`` kept
            [default: 0.3, HSC].

    Returns:
        * ``"shear"``: the mean reduced shear ``(g1, g2)`` per region, shape ``hr wr 2``
          (``hr = h / region_px``), NaN where a region has no measured galaxy.
        * ``"n_galaxies"``: measured galaxies per region, shape ``hr wr`` (int).
        * ``"positions"``: sep barycentres ``(row, col)`` of the measured galaxies (px),
          shape ``n 2``.
        * ``"e"``: their REGAUSS distortions ``(e1, e2)``, shape ``n 2``.
        * ``"e_err"``: per-component distortion errors from HSM, shape ``n``.
        * ``"e_rms"``, ``"responsivity"``: the intrinsic distortion RMS used and ``R``.

    Raises:
        BlissShapeError: ``image`` or ``psf_image`` is not 2-D.
        BlissValueError: ``region_px`` does not divide the image, a PSF side is even or its sum
            is not 1, the image has non-finite pixels, or ``background``,
            ``pixel_scale_arcsec``, ``detect_sigma``, ``stamp_px``, ``shape_noise`` or
            ``min_resolution`` is out of range.

    Warns:
        BlissWarning: no galaxy was measured (every region's shear is NaN).

    References:
        Hirata & Seljak 2003; Bernstein & Jarvis 2002; Mandelbaum et al. 2018 (module docstring).
    """
    image, psf_image = _check_inputs(
        image, background, psf_image, pixel_scale_arcsec, detect_sigma, stamp_px, min_resolution
    )
    n_region_rows, n_region_cols, region_h, region_w = _region_grid(image.shape, region_px)
    if shape_noise != "measured":
        e_rms = distortion_rms(shape_noise)

    psf = galsim.Image(psf_image, scale=pixel_scale_arcsec)
    positions, distortions, errors = _measure_shapes(
        image - background,
        background,
        psf,
        pixel_scale_arcsec,
        detect_sigma,
        stamp_px,
        min_resolution,
    )
    if shape_noise == "measured":
        e_rms = _measured_distortion_rms(distortions, errors)
    responsivity = 1.0 - e_rms**2
    if len(positions) == 0:
        warnings.warn(
            f"no galaxy was measured in the {image.shape} image (detect_sigma={detect_sigma}, "
            f"min_resolution={min_resolution}); every region's shear is NaN.",
            BlissWarning,
            stacklevel=2,
        )

    region_rows = np.floor(positions[:, 0] / region_h).astype(int)
    region_cols = np.floor(positions[:, 1] / region_w).astype(int)
    n_galaxies = np.zeros((n_region_rows, n_region_cols), dtype=np.int64)
    np.add.at(n_galaxies, (region_rows, region_cols), 1)
    shear_sum = np.zeros((n_region_rows, n_region_cols, 2))
    np.add.at(shear_sum, (region_rows, region_cols), distortions / (2 * responsivity))
    with np.errstate(invalid="ignore"):
        shear = shear_sum / n_galaxies[..., None]
    return {
        "shear": shear,
        "n_galaxies": n_galaxies,
        "positions": positions,
        "e": distortions,
        "e_err": errors,
        "e_rms": e_rms,
        "responsivity": responsivity,
    }
