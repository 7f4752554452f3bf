"""The deblending baseline of the dc2_cataloging study: photutils segmentation with ``deblend_sources``.

Needs ``pip install "bliss-toolkit[baselines]"`` (photutils 3 and scikit-image). It is the
closest public stand-in for the LSST pipeline's footprint deblending: sources are detected as
connected pixels above ``nsigma`` times the noise of the reference band smoothed by a Gaussian
of the PSF's FWHM (a matched filter, like the pipeline's 5-sigma detection), each footprint is
split by multi-thresholding and watershed (``deblend_sources``), and every band is measured in
the deblended segments (Kron fluxes). Shapes come from GalSim's HSM (REGAUSS, PSF-corrected) on each
detection's stamp, with the other segments' pixels given zero weight.

Every function takes a :class:`bliss.protocols.SurveyImage` (electrons with the sky) and returns
numpy arrays: positions as ``(row, col)`` with pixel centres at ``+0.5`` (like bliss's
``plocs``), fluxes in nanomaggies.
"""

import math

import numpy as np

from bliss.catalog.convert import nmgy_per_electron
from bliss.protocols import SurveyImage

__all__ = ["distortion_to_shear", "hsm_shapes", "photutils_catalog"]

#: a REGAUSS distortion this large is a failed measurement
_MAX_DISTORTION = 0.99


def photutils_catalog(
    image: SurveyImage,
    reference_band: str,
    pixel_scale_arcsec: float,
    nsigma: float = 5.0,
    npixels: int = 5,
    nlevels: int = 32,
    contrast: float = 0.001,
    size_ratio: float = 1.2,
) -> dict[str, np.ndarray]:
    """Detect, deblend and measure with photutils.

    Returns:
        ``plocs`` (``n 2``), ``fluxes`` (``n c``, Kron, nanomaggies), ``flux_err`` (``n c``),
        ``galaxy`` (``n``, bool: a semimajor axis above ``size_ratio`` times the PSF's Gaussian
        sigma), ``segmentation`` (``h w``, 0 for sky, ``label`` of each source) and ``label``
        (``n``).
    """
    from astropy.convolution import convolve
    from photutils.segmentation import (
        SourceCatalog,
        deblend_sources,
        detect_sources,
        make_2dgaussian_kernel,
    )

    ref = image.bands.index(reference_band)
    valid = np.isfinite(image.images).all(axis=0)
    subtracted = np.where(valid, image.images - image.background, 0.0)
    # detection on the image smoothed by the PSF (a matched filter, as survey pipelines do), at
    # nsigma times the smoothed sky noise
    fwhm_px = float(image.psf_fwhm_arcsec[ref]) / pixel_scale_arcsec
    kernel = make_2dgaussian_kernel(fwhm_px, size=2 * int(2 * fwhm_px) + 1)
    smoothed = convolve(subtracted[ref], kernel)
    noise = np.sqrt(np.clip(image.background[ref], 1e-3, None) * np.sum(kernel.array**2))
    threshold = nsigma * noise
    empty = {
        "plocs": np.zeros((0, 2)),
        "fluxes": np.zeros((0, len(image.bands))),
        "flux_err": np.zeros((0, len(image.bands))),
        "galaxy": np.zeros(0, bool),
        "segmentation": np.zeros(subtracted.shape[1:], np.int64),
        "label": np.zeros(0, np.int64),
    }
    segments = detect_sources(smoothed, threshold, n_pixels=npixels, mask=~valid)
    if segments is None:
        return empty
    segments = deblend_sources(
        smoothed,
        segments,
        n_pixels=npixels,
        n_levels=nlevels,
        contrast=contrast,
        progress_bar=False,
    )
    error = np.sqrt(np.clip(image.images, 1.0, None))
    reference = SourceCatalog(
        subtracted[ref], segments, convolved_data=smoothed, error=error[ref], mask=~valid
    )
    x, y = reference.xcentroid, reference.ycentroid
    fluxes, errors = [], []
    for c in range(len(image.bands)):
        band = SourceCatalog(
            subtracted[c], segments, error=error[c], mask=~valid, detection_catalog=reference
        )
        scale = nmgy_per_electron(float(image.magzero[c]))
        fluxes.append(np.nan_to_num(np.asarray(band.kron_flux, dtype=float)) * scale)
        errors.append(np.nan_to_num(np.asarray(band.kron_flux_err, dtype=float)) * scale)
    psf_sigma_px = float(image.psf_fwhm_arcsec[ref]) / pixel_scale_arcsec / 2.3548
    semimajor = np.asarray(getattr(reference.semimajor_axis, "value", reference.semimajor_axis))
    return {
        "plocs": np.stack([y + 0.5, x + 0.5], axis=1),
        "fluxes": np.stack(fluxes, axis=1),
        "flux_err": np.stack(errors, axis=1),
        "galaxy": semimajor > size_ratio * psf_sigma_px,
        "segmentation": np.asarray(segments.data, dtype=np.int64),
        "label": np.asarray(reference.label, dtype=np.int64),
    }


def distortion_to_shear(distortion: np.ndarray) -> np.ndarray:
    """REGAUSS's distortion ``(1 - q^2) / (1 + q^2)`` to the reduced-shear kind ``(1 - q) / (1 + q)``.

    Shape ``n 2`` in and out; the direction is kept.
    """
    magnitude = np.hypot(distortion[:, 0], distortion[:, 1])
    factor = np.where(magnitude > 0, 1.0 / (1.0 + np.sqrt(np.clip(1 - magnitude**2, 0, None))), 0.5)
    return distortion * factor[:, None]


def hsm_shapes(
    image: SurveyImage,
    band: str,
    psf_image: np.ndarray,
    plocs: np.ndarray,
    segmentation: np.ndarray,
    labels: np.ndarray,
    pixel_scale_arcsec: float,
    stamp_px: int = 31,
    min_resolution: float = 1 / 3,
) -> np.ndarray:
    """PSF-corrected REGAUSS ellipticities (reduced-shear kind) at each detection. Shape ``n 2``.

    NaN where the stamp leaves the image, HSM fails, or the galaxy is not resolved (resolution
    factor below ``min_resolution``: smaller than about the PSF).
    """
    import galsim

    c = image.bands.index(band)
    data = np.nan_to_num(image.images[c] - image.background[c])
    sky_var = float(np.median(image.background[c]))
    psf = galsim.Image(np.ascontiguousarray(psf_image, dtype=np.float64), scale=pixel_scale_arcsec)
    half = stamp_px // 2
    n_rows, n_cols = data.shape
    out = np.full((len(plocs), 2), np.nan)
    for i, ((row, col), label) in enumerate(zip(plocs, labels, strict=True)):
        row0, col0 = int(math.floor(row)) - half, int(math.floor(col)) - half
        if row0 < 0 or col0 < 0 or row0 + stamp_px > n_rows or col0 + stamp_px > n_cols:
            continue
        window = np.s_[row0 : row0 + stamp_px, col0 : col0 + stamp_px]
        own_or_sky = np.isin(segmentation[window], (0, label)).astype(np.int32)
        stamp = galsim.Image(
            np.ascontiguousarray(data[window]), xmin=col0, ymin=row0, scale=pixel_scale_arcsec
        )
        weight = galsim.Image(own_or_sky, xmin=col0, ymin=row0, scale=pixel_scale_arcsec)
        result = galsim.hsm.EstimateShear(
            stamp,
            psf,
            weight=weight,
            sky_var=sky_var,
            shear_est="REGAUSS",
            guess_centroid=galsim.PositionD(col - 0.5, row - 0.5),
            strict=False,
        )
        shape = np.array([result.corrected_e1, result.corrected_e2])
        if (
            result.error_message
            or not np.all(np.isfinite(shape))
            or np.hypot(*shape) >= _MAX_DISTORTION
            or not result.resolution_factor >= min_resolution
        ):
            continue
        out[i] = distortion_to_shear(shape[None])[0]
    return out
