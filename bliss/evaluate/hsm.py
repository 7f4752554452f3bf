"""PSF-corrected galaxy shapes with GalSim's HSM re-Gaussianization (REGAUSS), for baselines.

One measurement per detection: a square stamp centred on the detection's pixel, the pixels of
other detections given zero weight (when a segmentation map is given), and
``galsim.hsm.EstimateShear(..., shear_est="REGAUSS")``. A measurement is kept when HSM reports
no error, both components are finite, ``|e| < max_distortion`` and the resolution factor is at
least ``min_resolution`` (sources near the PSF's size carry little shape information and the
largest PSF-correction errors; the HSC first-year cuts are ``|e| < 2`` and 0.3).

REGAUSS returns a distortion ``(a^2 - b^2) / (a^2 + b^2) (cos 2 beta, sin 2 beta)``; use
:func:`distortion_to_shear` for the reduced-shear kind ``(a - b) / (a + b) (...)`` of
:mod:`bliss.catalog.ellipticity`.

References:
    Hirata, C. & Seljak, U. 2003, MNRAS 343, 459 (re-Gaussianization).
    Mandelbaum, R. et al. 2018, PASJ 70, S25 (HSC first-year shape catalog).
"""

import numpy as np

__all__ = ["distortion_to_shear", "regauss_shapes"]


def regauss_shapes(
    data: np.ndarray,
    sky_var: float,
    psf_image: np.ndarray,
    pixel_scale_arcsec: float,
    centres_xy: np.ndarray,
    *,
    segmentation: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    guess_sigma_px: np.ndarray | None = None,
    stamp_px: int = 25,
    min_resolution: float = 0.3,
    max_distortion: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """REGAUSS distortions and their errors at each detection.

    Args:
        data: one band, sky subtracted, electrons. Shape ``h w``.
        sky_var: the sky's pixel variance (electrons^2).
        psf_image: the pixel-convolved PSF at the same scale, centred, odd sides.
        pixel_scale_arcsec: pixel side, arcsec.
        centres_xy: detections in GalSim's convention (pixel centres on integers, ``x`` = col,
            ``y`` = row; bliss's ``plocs`` minus 0.5, reversed). Shape ``n 2``.
        segmentation: a map of detection labels (0: sky) whose other labels get zero weight.
        labels: each detection's label in ``segmentation``. Shape ``n``.
        guess_sigma_px: a first guess of each galaxy's Gaussian sigma, px [default: HSM's].
        stamp_px: stamp side, px; a stamp leaving the image is not measured.
        min_resolution: smallest accepted resolution factor.
        max_distortion: largest accepted ``|e|``.

    Returns:
        Distortions ``n 2`` and errors ``n`` (twice GalSim's ``corrected_shape_err``, which is in
        shear units), NaN where not measured.
    """
    import galsim

    psf = galsim.Image(np.ascontiguousarray(psf_image, dtype=np.float64), scale=pixel_scale_arcsec)
    n_rows, n_cols = data.shape
    half = stamp_px // 2
    shapes = np.full((len(centres_xy), 2), np.nan)
    errors = np.full(len(centres_xy), np.nan)
    for i, (x, y) in enumerate(centres_xy):
        col0, row0 = round(float(x)) - half, round(float(y)) - half
        if row0 < 0 or col0 < 0 or row0 + stamp_px > n_rows or col0 + stamp_px > n_cols:
            continue
        window = np.s_[row0 : row0 + stamp_px, col0 : col0 + stamp_px]
        # xmin = col0: a stamp pixel's GalSim coordinates are its indices in the full image
        stamp = galsim.Image(
            np.ascontiguousarray(data[window], dtype=np.float64),
            xmin=col0,
            ymin=row0,
            scale=pixel_scale_arcsec,
        )
        weight = None
        if segmentation is not None and labels is not None:
            own_or_sky = np.isin(segmentation[window], (0, labels[i])).astype(np.int32)
            weight = galsim.Image(own_or_sky, xmin=col0, ymin=row0, scale=pixel_scale_arcsec)
        result = galsim.hsm.EstimateShear(
            stamp,
            psf,
            weight=weight,
            sky_var=sky_var,
            shear_est="REGAUSS",
            guess_sig_gal=5.0 if guess_sigma_px is None else float(guess_sigma_px[i]),
            guess_centroid=galsim.PositionD(float(x), float(y)),
            strict=False,
        )
        shape = np.array([result.corrected_e1, result.corrected_e2])
        if (
            result.error_message
            or not np.all(np.isfinite(shape))
            or np.hypot(*shape) >= max_distortion
            or not result.resolution_factor >= min_resolution
        ):
            continue
        shapes[i] = shape
        errors[i] = 2 * result.corrected_shape_err
    return shapes, errors


def distortion_to_shear(distortion: np.ndarray) -> np.ndarray:
    """A distortion ``(1 - q^2) / (1 + q^2)`` as the reduced-shear kind ``(1 - q) / (1 + q)``.

    Shape ``n 2`` in and out; the direction is kept. A noisy ``|e| >= 1`` (no axis ratio has
    it) is halved no further than ``e / 1``.
    """
    magnitude = np.hypot(distortion[:, 0], distortion[:, 1])
    factor = 1.0 / (1.0 + np.sqrt(np.clip(1 - magnitude**2, 0, None)))
    return distortion * factor[:, None]
