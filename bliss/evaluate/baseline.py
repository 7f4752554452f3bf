"""A SExtractor-style baseline with ``sep``: background, detection, Kron photometry, size-based class.

Detection runs on the reference band (background-subtracted, threshold ``thresh`` times the
per-pixel noise ``sqrt(sky)``); every band is measured in the same Kron ellipse
(``2.5 x`` the Kron radius, with a circular ``min_radius_px`` floor as in SExtractor). A source is
called a galaxy when its half-light radius exceeds ``size_ratio`` times the PSF's. Flux intervals
are Gaussian from ``sep``'s flux errors, so the baseline's calibration can be compared too.
"""

import math

import numpy as np
import torch

from bliss.catalog import FullCatalog
from bliss.catalog.convert import nmgy_per_electron
from bliss.catalog.io import xy_to_plocs
from bliss.posterior.distributions import normal_icdf
from bliss.protocols import SurveyImage

__all__ = ["moffat_half_light_radius_px", "sep_catalog"]


def moffat_half_light_radius_px(
    fwhm_arcsec: float, beta: float, pixel_scale_arcsec: float
) -> float:
    """Half-light radius of a Moffat profile, in pixels."""
    core = fwhm_arcsec / (2 * math.sqrt(2 ** (1 / beta) - 1))
    return core * math.sqrt(2 ** (1 / (beta - 1)) - 1) / pixel_scale_arcsec


def sep_catalog(
    image: SurveyImage,
    reference_band: str,
    pixel_scale_arcsec: float,
    psf_beta: float = 3.5,
    thresh: float = 1.5,
    min_area: int = 5,
    deblend_cont: float = 0.005,
    min_radius_px: float = 3.5,
    size_ratio: float = 1.15,
    quantiles: tuple[float, ...] = (0.05, 0.95),
) -> FullCatalog:
    """Detect and measure sources with ``sep``.

    Returns:
        A one-image catalog like :meth:`bliss.predict.predictor.Predictor.predict`'s:
        ``plocs``, ``prob_source`` (1), ``prob_galaxy`` and ``source_type`` (0/1), ``fluxes``
        (nmgy) and ``fluxes@<q>``. Shape of each key ``1 n d``.
    """
    import sep

    # large frames overflow sep's default pixel stack (300 000 pixels)
    sep.set_extract_pixstack(max(300_000, image.images[0].size))
    sep.set_sub_object_limit(4096)
    ref = image.bands.index(reference_band)
    valid = np.isfinite(image.images).all(axis=0)
    subtracted = np.where(valid, image.images - image.background, 0.0).astype(np.float64)
    noise = np.sqrt(np.clip(image.background, 1e-3, None)).astype(np.float64)
    data = np.ascontiguousarray(subtracted[ref])
    objects = sep.extract(
        data,
        thresh,
        err=np.ascontiguousarray(noise[ref]),
        mask=~valid,
        minarea=min_area,
        deblend_cont=deblend_cont,
    )
    n = len(objects)
    x, y = objects["x"], objects["y"]
    # sep stores theta in float32, so +-pi/2 can land just outside [-pi/2, pi/2] and sep then
    # rejects the aperture ("invalid aperture parameters": 3 of 2443 objects on SDSS frame
    # 94-1-12); a degenerate or non-finite a, b would be rejected too, so those get the circle
    theta = np.clip(objects["theta"].astype(np.float64), -math.pi / 2, math.pi / 2)
    good_shape = np.isfinite(objects["a"]) & np.isfinite(objects["b"]) & (objects["b"] > 0)
    a = np.where(good_shape, objects["a"], 1.0).astype(np.float64)
    b = np.where(good_shape, objects["b"], 1.0).astype(np.float64)
    fluxes = np.zeros((n, len(image.bands)))
    errors = np.zeros((n, len(image.bands)))
    if n:
        kron_radius, _ = sep.kron_radius(data, x, y, a, b, theta, 6.0)
        small = ~good_shape | ~(kron_radius * np.sqrt(a * b) >= min_radius_px)
        kron_radius = np.where(np.isfinite(kron_radius) & (kron_radius > 0), kron_radius, 1.0)
        for c in range(len(image.bands)):
            band_data = np.ascontiguousarray(subtracted[c])
            # variance = sky + source counts (gain folded in: the image is in electrons)
            band_err = np.ascontiguousarray(
                np.sqrt(np.clip(image.images[c], 1e-3, None)).astype(np.float64)
            )
            band_err = np.where(valid, band_err, noise[c])
            flux, err, _ = sep.sum_ellipse(
                band_data, x, y, a, b, theta, 2.5 * kron_radius, err=band_err, subpix=1
            )
            flux_c, err_c, _ = sep.sum_circle(
                band_data, x, y, min_radius_px, err=band_err, subpix=1
            )
            scale = nmgy_per_electron(float(image.magzero[c]))
            fluxes[:, c] = np.where(small, flux_c, flux) * scale
            errors[:, c] = np.where(small, err_c, err) * scale
        half_light, _ = sep.flux_radius(
            data,
            x,
            y,
            6.0 * a,
            0.5,
            normflux=fluxes[:, ref] / nmgy_per_electron(float(image.magzero[ref])),
            subpix=5,
        )
        psf_half = moffat_half_light_radius_px(
            float(image.psf_fwhm_arcsec[ref]), psf_beta, pixel_scale_arcsec
        )
        galaxy = (half_light > size_ratio * psf_half).astype(np.float32)
    else:
        galaxy = np.zeros(0, dtype=np.float32)
    _, height, width = image.images.shape
    columns = {
        "plocs": xy_to_plocs(x, y),
        "prob_source": np.ones((n, 1)),
        "prob_galaxy": galaxy.reshape(n, 1),
        "source_type": galaxy.reshape(n, 1),
        "fluxes": fluxes,
    }
    for q in quantiles:
        columns[f"fluxes@{q:g}"] = fluxes + float(normal_icdf(q)) * errors
    data = {k: torch.from_numpy(np.asarray(v)).float().unsqueeze(0) for k, v in columns.items()}
    return FullCatalog(height, width, {"n_sources": torch.tensor([n]), **data})
