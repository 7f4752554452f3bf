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

import numpy as np

from bliss.catalog.convert import nmgy_per_electron
from bliss.evaluate.hsm import distortion_to_shear, regauss_shapes
from bliss.protocols import SurveyImage

__all__ = ["hsm_shapes", "photutils_catalog"]

#: a distortion of 1 or more has no axis ratio: a failed measurement for a shape comparison
_MAX_DISTORTION = 1.0


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
    x, y = reference.x_centroid, reference.y_centroid
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

    NaN where the stamp leaves the image, HSM fails, ``|e| >= 1``, or the galaxy is not resolved
    (resolution factor below ``min_resolution``: smaller than about the PSF);
    :func:`bliss.evaluate.hsm.regauss_shapes` does the measuring.
    """
    c = image.bands.index(band)
    distortions, _ = regauss_shapes(
        np.nan_to_num(image.images[c] - image.background[c]),
        float(np.median(image.background[c])),
        psf_image,
        pixel_scale_arcsec,
        plocs[:, ::-1] - 0.5,
        segmentation=segmentation,
        labels=labels,
        stamp_px=stamp_px,
        min_resolution=min_resolution,
        max_distortion=_MAX_DISTORTION,
    )
    return distortion_to_shear(distortions)
