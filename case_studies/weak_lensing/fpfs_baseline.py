"""The FPFS shear baseline: AnaCal's detection + FPFS measurement on one band of one image.

:func:`fpfs_shear` returns the weighted ellipticity and shear-response sums of every detection,
so that an ensemble estimate over one or many images is a ratio of sums::

    g_i = sum_images e_i / sum_images r_i        (i = 1, 2)

with, for each detection ``k`` (selection weight ``w_k``, FPFS ellipticity ``e_ik``)::

    e_i = sum_k w_k e_ik
    r_i = sum_k (w_k de_ik/dg_i + e_ik dw_k/dg_i)

The second term of ``r_i`` is the detection/selection response; with it the estimator corrects
detection and selection bias analytically (no image simulations or metacalibration). The noise
bias is removed by AnaCal's renoising: a pure-noise image of the same variance is added to the
data after AnaCal rotates it by 90 degrees (the rotation happens inside AnaCal, so the noise we
pass is not rotated), which doubles the noise but cancels its contribution to the response.

This module needs the optional ``anacal`` package, pinned because its API changes between
releases (``pip install "bliss-toolkit[weak_lensing]"``); it is imported lazily.

References:
    Li, X., Li, Y. & Massey, R. 2018, MNRAS 481, 4445 (FPFS).
    Li, X., Li, Z. & Mandelbaum, R. 2024, MNRAS 527, 10388 (ADS 2024MNRAS.527.10388L): FPFS
    with analytic detection and selection bias correction.
    Li, X. & Mandelbaum, R. 2025, MNRAS 536, 3663 (ADS 2025MNRAS.536.3663L): noise bias
    correction by renoising.
    AnaCal: https://github.com/mr-superonion/AnaCal (version 0.8.3).
"""

import math
from typing import Any

import numpy as np
from baseline_inputs import checked_image_and_psf, require_positive

from bliss.errors import BlissValueError

__all__ = ["FPFS_DEFAULTS", "fpfs_shear"]

#: AnaCal's zero point (AB magnitude of one image unit) at which its flux-scale thresholds are
#: defined: ``anacal.task.THRESHOLD_REF_MAG_ZERO`` (nanojansky images).
_REFERENCE_MAG_ZERO = 31.4
#: cells AnaCal cuts the image into (px) and their overlap; AnaCal needs an overlap of at least
#: twice its 16-pixel background kernel reach
_CELL_PX = 256
_CELL_OVERLAP_PX = 32

#: Configuration of :func:`fpfs_shear` and its defaults. Flux-scale parameters are in units of
#: the pixel noise standard deviation ``sqrt(noise_variance)``, so they do not depend on the
#: image's units; the defaults are those of AnaCal's own detection test
#: (``tests/task/test_detection.py``: ``omega_f = 0.8``, ``omega_v = 0.04`` and the Task's
#: default ``fpfs_c0 = 1`` at a pixel noise of ``sqrt(0.1)``).
FPFS_DEFAULTS: dict[str, Any] = {
    # width (arcsec) of the Gaussian re-smoothing kernel; None: metadetect's `fitgauss` choice
    # from the PSF, sqrt(T d / 2) (`anacal.ngmix.fitgauss_sigma_arcsec`)
    "sigma_arcsec": None,
    # minimum peak signal-to-noise ratio of a detection in the smoothed image
    "snr_peak_min": 10.0,
    # width of the smooth step in peak flux that makes the selection weight differentiable
    # (units of the pixel noise sigma)
    "omega_f": 2.5,
    # width of the smooth step in (peak - neighbour) that defines a peak (pixel noise sigma)
    "omega_v": 0.13,
    # C0 of the FPFS ellipticity e = M22 / (M00 + C0), which down-weights faint sources
    # (pixel noise sigma)
    "fpfs_c0": 3.2,
    # side (px, even) of the measurement stamp; the PSF image is zero-padded or cropped to it
    "stamp_size": 64,
    # sources closer than this to the image edge (px) are not detected
    "image_bound": 0,
    # add a 90-degree-rotated pure-noise image to remove noise bias (needs `rng`)
    "noise_bias_correction": True,
}


def _import_anacal() -> Any:
    """``anacal``, or an ImportError that says how to install it."""
    try:
        import anacal
    except ImportError as err:
        raise ImportError(
            "fpfs_shear needs the optional package anacal (0.8.3), which is not installed; "
            'install it with: pip install "bliss-toolkit[weak_lensing]"'
        ) from err
    return anacal


def _check_config(config: dict[str, Any]) -> dict[str, Any]:
    """The defaults updated with ``config``; unknown keys and impossible values raise."""
    unknown = sorted(set(config) - set(FPFS_DEFAULTS))
    if unknown:
        raise BlissValueError(
            f"unknown fpfs_shear option(s) {unknown}; the options are {sorted(FPFS_DEFAULTS)}."
        )
    merged = {**FPFS_DEFAULTS, **config}
    stamp = merged["stamp_size"]
    if not isinstance(stamp, int) or stamp < 16 or stamp % 2:
        raise BlissValueError(f"stamp_size={stamp!r}; expected an even integer >= 16 (e.g. 64).")
    if merged["sigma_arcsec"] is not None and not merged["sigma_arcsec"] > 0:
        raise BlissValueError(
            f"sigma_arcsec={merged['sigma_arcsec']!r}; expected a positive width in arcsec, or "
            "None to derive it from the PSF."
        )
    for key in ("snr_peak_min", "omega_f", "omega_v", "fpfs_c0"):
        require_positive(key, merged[key], "a positive number")
    if not isinstance(merged["image_bound"], int) or merged["image_bound"] < 0:
        raise BlissValueError(
            f"image_bound={merged['image_bound']!r}; expected a non-negative number of pixels."
        )
    return merged


def _check_inputs(
    image: np.ndarray, psf_image: np.ndarray, noise_variance: float, pixel_scale_arcsec: float
) -> tuple[np.ndarray, np.ndarray]:
    """The image as float32 and the PSF normalised to unit sum, after checking both."""
    image, psf_image = checked_image_and_psf(image, psf_image)
    require_positive(
        "noise_variance",
        noise_variance,
        "the positive per-pixel variance of the image noise (electrons^2)",
    )
    require_positive("pixel_scale_arcsec", pixel_scale_arcsec, "a positive pixel side in arcsec")
    return np.ascontiguousarray(image, dtype=np.float32), psf_image


def fpfs_shear(
    image: np.ndarray,
    psf_image: np.ndarray,
    noise_variance: float,
    pixel_scale_arcsec: float,
    *,
    rng: np.random.Generator | None = None,
    **config: Any,
) -> dict[str, float | int]:
    """Detect sources with AnaCal and return their summed FPFS ellipticities and responses.

    Args:
        image: one band, shape ``h w``, in electrons, sky already subtracted, with Gaussian
            noise of variance ``noise_variance`` per pixel.
        psf_image: the pixel-convolved PSF at the same pixel scale, odd sides, centred on the
            central pixel, sum 1 (within 0.05; it is renormalised).
        noise_variance: per-pixel noise variance of ``image`` (electrons^2).
        pixel_scale_arcsec: pixel side in arcsec.
        rng: draws the pure-noise image of the noise-bias correction; required unless
            ``noise_bias_correction=False``.
        **config: options of :data:`FPFS_DEFAULTS` (flux-scale ones in units of the pixel
            noise standard deviation).

    Returns:
        ``{"e1", "e2", "r1", "r2", "n"}``: the selection-weighted ellipticity sums ``e_i``, the
        response sums ``r_i`` (see the module docstring) and the number of detections
        ``n`` (noise peaks included: AnaCal keeps them with selection weights near 0). For
        one image ``g_i = e_i / r_i``; for several, sum ``e_i`` and ``r_i`` over the images,
        then divide. With no detection every sum is 0.

    Raises:
        ImportError: anacal is not installed.
        BlissShapeError: ``image`` or ``psf_image`` is not 2-D.
        BlissValueError: a PSF side is even, the PSF does not sum to 1, ``noise_variance`` or
            ``pixel_scale_arcsec`` is not positive, the image has non-finite pixels, ``rng`` is
            missing, or an option is unknown or out of range.

    References:
        Li, Li & Mandelbaum 2024, MNRAS 527, 10388; AnaCal (see the module docstring).
    """
    image, psf_image = _check_inputs(image, psf_image, noise_variance, pixel_scale_arcsec)
    options = _check_config(config)
    if options["noise_bias_correction"] and rng is None:
        raise BlissValueError(
            "rng is None; the noise-bias correction draws a pure-noise image: pass "
            "rng=numpy.random.default_rng(seed), or noise_bias_correction=False."
        )
    anacal = _import_anacal()

    stamp = options["stamp_size"]
    psf_stamp = anacal.psf.resize_array(psf_image, (stamp, stamp))  # centre pixel -> stamp//2
    sigma_arcsec = options["sigma_arcsec"]
    if sigma_arcsec is None:
        sigma_arcsec = anacal.ngmix.fitgauss_sigma_arcsec(psf_stamp, pixel_scale_arcsec)
    noise_sigma = math.sqrt(noise_variance)
    # AnaCal multiplies its flux-scale thresholds by 10**((mag_zero - 31.4) / 2.5); this
    # zero point makes that factor the noise sigma, so the options are in noise units
    mag_zero = _REFERENCE_MAG_ZERO + 2.5 * math.log10(noise_sigma)
    task = anacal.task.Task(
        scale=pixel_scale_arcsec,
        sigma_arcsec=float(sigma_arcsec),
        snr_peak_min=float(options["snr_peak_min"]),
        omega_f=float(options["omega_f"]),
        omega_v=float(options["omega_v"]),
        fpfs_c0=float(options["fpfs_c0"]),
        mag_zero=mag_zero,
        stamp_size=stamp,
        image_bound=options["image_bound"],
        # no Gaussian-fit iterations, centre held: the FPFS moments are measured at the
        # detected peak pixel (the choice of AnaCal's authors in their xlens pipeline)
        num_epochs=0,
        force_center=True,
    )
    n_rows, n_cols = image.shape
    cells = anacal.geometry.get_cell_list(
        img_nx=n_cols,
        img_ny=n_rows,
        cell_nx=_CELL_PX,
        cell_ny=_CELL_PX,
        cell_overlap=_CELL_OVERLAP_PX,
        scale=pixel_scale_arcsec,
    )
    noise_image = None
    if options["noise_bias_correction"]:
        noise_image = rng.normal(0.0, noise_sigma, size=image.shape).astype(np.float32)
    catalog = task.process_image(
        image, psf_stamp, variance=float(noise_variance), cell_list=cells, noise_array=noise_image
    )
    return _sum_shear(catalog)


def _sum_shear(catalog: np.ndarray) -> dict[str, float | int]:
    """The weighted ellipticity and response sums of an AnaCal catalog (see the module doc)."""
    weight = catalog["wsel"]
    sums: dict[str, float | int] = {"n": len(catalog)}
    for i in ("1", "2"):
        ellipticity = catalog[f"fpfs_e{i}"]
        sums[f"e{i}"] = float(np.sum(weight * ellipticity))
        sums[f"r{i}"] = float(
            np.sum(weight * catalog[f"fpfs_de{i}_dg{i}"] + catalog[f"dwsel_dg{i}"] * ellipticity)
        )
    return sums
