"""Confusion noise: light the catalog does not explain, measured on the image, added to intervals.

In a crowded field the stars below the detection limit, and what the catalog's own stars leave
in the residual, add to every flux a noise that neither the network (trained on sparse fields)
nor the PSF fit (which models only the catalog's stars) knows of: their 90 % flux intervals
covered 0.5-0.6 of the true fluxes of stars in fields of ~0.01 stars per px².

What a star placed anywhere would absorb of that light is the PSF-matched filter of the residual
image (the data, less the sky and the catalog's stars), scaled to a flux. Its spread over a block
of the image, against the spread the sky's noise alone gives the same filter, measures the
excess; the excess is added in quadrature to every source's flux interval in that block, in
each band, and the position intervals are widened by the ratio of noise with and without it
(its median over bands, as positions use every band: a position measured against a noisier
background is as much less certain). In
a sparse field the ratio is 1 up to its estimate's noise, so nothing changes there.

The spread is taken from the central 90 % of the block's filtered values, not their variance,
so that the few positions on a bright star's core (whose misfit is the PSF model's, and which
the fit's own chi-square widens already) do not set the whole block's.

A crowd also hides stars right beside the catalog's, too close to a brighter one for the
network to find: the star's flux takes in part of theirs, and the block's spread, measured away
from the catalog's stars, does not see them. It shows in the star's own residual, as DAOPHOT's
per-star chi does: each star's flux interval is also widened by the square root of the reduced
chi-square of the residual within :data:`MISFIT_RADIUS_FWHM` of it, where that exceeds 1 by
more than :data:`MISFIT_SIGNIFICANCE` standard deviations of its estimate (on fields of 0.009
stars per px², stars of r 16-19 with an undetected neighbour within 3 px covered 0.15-0.3
without it).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.signal import fftconvolve
from scipy.special import ndtri

from bliss.catalog import FullCatalog
from bliss.predict.psf_model import ImagePsf, stamp_slices
from bliss.predict.psf_photometry import (
    LOCAL_SKY_KEY,
    PROFILE_ERROR,
    PsfStamps,
    flux_per_electron,
    near,
    network_sigma,
    padded,
)
from bliss.protocols import SurveyImage

__all__ = [
    "BLOCK_PX",
    "MIN_EXCESS",
    "Confusion",
    "centred_stamp",
    "galaxy_mask",
    "measure_confusion",
    "render_with_variance",
    "widen_for_confusion",
]

#: side of the blocks the filtered residual's spread is measured in, pixels
BLOCK_PX = 64
#: the variance ratio (filtered residual to sky noise) a block must exceed before it counts,
#: and only the excess beyond it is added: about two standard deviations of the ratio's
#: estimate on a 64 px block of a sparse field (measured: 0.76-1.23, 10-90 %, on 32 px blocks)
MIN_EXCESS = 1.2
#: pixels within this distance of a galaxy (plus its half-light radii) are left out: the stars'
#: model does not hold a galaxy's light, whose residual is its own flux, not confusion
GALAXY_MASK_PX = 6.0
#: PSF stamp half-width, pixels
STAMP_HALF_PX = 12
#: radius of a star's own residual, in FWHM, whose reduced chi-square widens its flux interval
MISFIT_RADIUS_FWHM = 1.25
#: ... where it exceeds 1 by this many standard deviations of the mean of its pixels' chi-square
#: (0.5 % of the stars of a field the catalog explains fully are widened, measured)
MISFIT_SIGNIFICANCE = 3.0
_Z90 = float(ndtri(0.95))


@dataclass(frozen=True)
class Confusion:
    """What :func:`measure_confusion` found, per source and band (shapes ``n c``).

    Attributes:
        sigma: the confusion standard deviation of the flux, nanomaggies.
        noise_ratio: ``sqrt(1 + sigma² / sky-noise sigma²)``.
        misfit: the factor a star's flux interval is widened by for its own residual (>= 1;
            1 for galaxies).
        offset: what a star's flux measured against the image's background took in of the
            block's typical unexplained light, nanomaggies (the filtered residual's median; 0
            where the block has no confusion, for galaxies and for fits with a local sky).
    """

    sigma: np.ndarray
    noise_ratio: np.ndarray
    misfit: np.ndarray
    offset: np.ndarray


def measure_confusion(
    image: SurveyImage,
    catalog: FullCatalog,
    psf_models: list[PsfStamps],
    quantiles: Sequence[float],
    pixel_scale_arcsec: float,
    block_px: int = BLOCK_PX,
    sky_refitted: np.ndarray | None = None,
) -> Confusion:
    """Each source's confusion flux noise, noise ratio and own misfit, per band.

    Args:
        image: the image the catalog came from (electrons, sky included).
        catalog: its one-image catalog (fluxes in the image's nanomaggies, ``prob_galaxy`` where
            the model has galaxies).
        psf_models: each band's PSF model (from
            :func:`bliss.predict.psf_photometry.refine_star_fluxes`).
        quantiles: the catalog's quantiles (``plocs@<q>``: the positions' uncertainty).
        pixel_scale_arcsec: pixel side (turns galaxy half-light radii into pixels).
        block_px: block side, pixels.
        sky_refitted: pixels whose background was measured again with the stars subtracted
            (``h w``, bool; :mod:`bliss.predict.sky`): sources there take no offset.
    """
    n = int(catalog["n_sources"][0])
    n_bands = len(image.bands)
    sigma, ratio, misfit = np.zeros((n, n_bands)), np.ones((n, n_bands)), np.ones((n, n_bands))
    offset = np.zeros((n, n_bands))
    if n == 0:
        return Confusion(sigma, ratio, misfit, offset)
    positions = catalog["plocs"][0, :n].double().numpy()
    galaxy = (
        catalog["prob_galaxy"][0, :n, 0].numpy() >= 0.5
        if "prob_galaxy" in catalog
        else np.zeros(n, dtype=bool)
    )
    mask = galaxy_mask(catalog, positions, galaxy, image.images.shape[1:], pixel_scale_arcsec)
    h, w = image.images.shape[1:]
    rows = np.clip((positions[:, 0] // block_px).astype(int), 0, max(h // block_px - 1, 0))
    cols = np.clip((positions[:, 1] // block_px).astype(int), 0, max(w // block_px - 1, 0))
    stamps = [centred_stamp(psf, h, w) for psf in psf_models]
    usable = _clear_of(mask, 2 * STAMP_HALF_PX + 1)
    position_sd = network_sigma(catalog, quantiles, "plocs")
    position_sd = np.zeros(n) if position_sd is None else position_sd[:n].mean(axis=1)
    for band in range(n_bands):
        unit = flux_per_electron(image, band)
        fluxes = catalog["fluxes"][0, :n, band].double().numpy() / unit
        stars, expected = render_with_variance(
            positions[~galaxy], fluxes[~galaxy], position_sd[~galaxy], psf_models[band], (h, w)
        )
        residual = image.images[band] - image.background[band] - stars
        sky = np.clip(image.background[band], 1e-3, None)
        excess, sky_var, centre = _block_excess(residual, sky, usable, stamps[band], block_px)
        extra = np.clip(excess - MIN_EXCESS, 0, None) * sky_var  # electrons²
        sigma[:, band] = np.sqrt(extra[rows, cols]) * unit
        offset[:, band] = np.where(extra > 0, centre, 0.0)[rows, cols] * unit
        ratio[:, band] = np.sqrt(1 + extra[rows, cols] / sky_var[rows, cols])
        # the residual a catalog explains has the noise's variance plus what its positions'
        # uncertainty leaves (the catalog's are the network's, not the fits'; a fitted flux
        # leaves none), and a survey's PSF model its percent-level errors
        profile = PROFILE_ERROR if isinstance(psf_models[band], ImagePsf) else 0.0
        variance = sky + np.clip(stars, 0, None) + expected + (profile * stars) ** 2
        radius = MISFIT_RADIUS_FWHM * float(image.psf_fwhm_arcsec[band]) / pixel_scale_arcsec
        misfit[~galaxy, band] = _own_misfit(
            residual**2 / variance, mask, positions[~galaxy], radius
        )
        if isinstance(psf_models[band], ImagePsf):
            psf_models[band].clear_cache()  # as the fits do: a frame's stamps add ~150 MB
    # a galaxy's fluxes are not a star's: the residual around it is its own light beyond its
    # model (on `sersic` fields the offset made large galaxies' fluxes fainter still)
    offset[galaxy] = 0.0
    if sky_refitted is not None:  # measured without the stars: what the offset stood for
        pixel = np.clip(positions.astype(int), 0, np.array([h, w]) - 1)
        offset[sky_refitted[pixel[:, 0], pixel[:, 1]]] = 0.0
    if LOCAL_SKY_KEY in catalog:  # a local sky term took up the light around those already
        offset *= catalog[LOCAL_SKY_KEY][0, :n].numpy() < 0.5
    return Confusion(sigma, ratio, misfit, offset)


def widen_for_confusion(
    catalog: FullCatalog, confusion: Confusion, quantiles: Sequence[float]
) -> FullCatalog:
    """The catalog with its flux and position intervals widened by confusion noise.

    Each flux quantile moves away from the point estimate so that the interval's Gaussian
    sigma grows from ``s`` to ``misfit * sqrt(s² + sigma²)``, then the flux and all its
    quantiles move by ``-offset``; each position quantile moves away from the position by the
    median over bands of ``noise_ratio`` (positions use every band).
    """
    sigma = confusion.sigma
    position_ratio = np.median(confusion.noise_ratio, axis=1)
    n = int(catalog["n_sources"][0])
    if n == 0:
        return catalog
    data = dict(catalog.items())
    fluxes = catalog["fluxes"][0, :n].double().numpy()
    own = network_sigma(catalog, quantiles)
    if own is not None:
        own = np.clip(own[:n], 1e-12, None)
        stretch = confusion.misfit * np.sqrt(own**2 + sigma**2) / own
        for key in catalog.keys():
            if key.startswith("fluxes@"):
                old = catalog[key][0, :n].double().numpy()
                data[key] = padded(
                    catalog[key], fluxes + (old - fluxes) * stretch - confusion.offset
                )
    data["fluxes"] = padded(catalog["fluxes"], fluxes - confusion.offset)
    for centre, prefix in (("plocs", "plocs@"), ("locs", "locs@")):
        point = catalog[centre][0, :n].double().numpy()
        for key in catalog.keys():
            if key.startswith(prefix):
                old = catalog[key][0, :n].double().numpy()
                data[key] = padded(catalog[key], point + (old - point) * position_ratio[:, None])
    return FullCatalog(catalog.height_px, catalog.width_px, data)


def galaxy_mask(
    catalog: FullCatalog,
    positions: np.ndarray,
    galaxy: np.ndarray,
    shape: tuple[int, int],
    pixel_scale_arcsec: float,
) -> np.ndarray:
    """Pixels near a galaxy: within :data:`GALAXY_MASK_PX` plus three half-light radii."""
    n = len(galaxy)
    radii = np.zeros(n)
    for key in ("disk_hlr_arcsec", "bulge_hlr_arcsec"):
        if key in catalog:
            values = np.nan_to_num(catalog[key][0, :n, 0].double().numpy(), nan=0.0)
            radii = np.maximum(radii, values / pixel_scale_arcsec)
    return near(positions[galaxy], shape, GALAXY_MASK_PX + 3 * radii[galaxy])


def render_with_variance(
    positions: np.ndarray,
    fluxes: np.ndarray,
    position_sd: np.ndarray,
    psf: PsfStamps,
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Stars drawn as PSFs, and the variance their position uncertainty leaves.

    Per pixel: ``sum_i position_sd_i² flux_i² |grad psf_i|²``.
    """
    model, variance = np.zeros(shape), np.zeros(shape)
    for (row, col), flux, p_sd in zip(
        positions, np.clip(fluxes, 0, None), position_sd, strict=True
    ):
        cut = stamp_slices(row, col, shape, STAMP_HALF_PX)
        if cut is None:
            continue
        rows, cols, s_rows, s_cols, offset_row, offset_col = cut
        stamp = np.asarray(psf.stamp(row, col, offset_row, offset_col, STAMP_HALF_PX))
        grad_row, grad_col = np.gradient(stamp)
        model[rows, cols] += flux * stamp[s_rows, s_cols]
        variance[rows, cols] += (p_sd * flux) ** 2 * (
            grad_row[s_rows, s_cols] ** 2 + grad_col[s_rows, s_cols] ** 2
        )
    return model, variance


def _own_misfit(
    chi2: np.ndarray, mask: np.ndarray, positions: np.ndarray, radius: float
) -> np.ndarray:
    """Per position: ``sqrt`` of the mean of ``chi2`` within ``radius``, where significant.

    Pixels in ``mask`` are left out; 1 where the mean is within :data:`MISFIT_SIGNIFICANCE`
    standard deviations of 1 (a chi-square mean of ``k`` pixels has one of ``sqrt(2 / k)``).
    """
    half = int(math.ceil(radius)) + 1
    steps = np.arange(-half, half + 1)
    d_rows, d_cols = (grid.ravel() for grid in np.meshgrid(steps, steps, indexing="ij"))
    h, w = chi2.shape
    rows = np.floor(positions[:, :1]).astype(int) + d_rows  # n k
    cols = np.floor(positions[:, 1:]).astype(int) + d_cols
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    rows, cols = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    near = (rows + 0.5 - positions[:, :1]) ** 2 + (cols + 0.5 - positions[:, 1:]) ** 2
    use = inside & (near <= radius**2) & ~mask[rows, cols]
    k = use.sum(axis=1)
    mean = np.where(use, chi2[rows, cols], 0.0).sum(axis=1) / np.clip(k, 1, None)
    significant = (k >= 1) & (mean > 1 + MISFIT_SIGNIFICANCE * np.sqrt(2 / np.clip(k, 1, None)))
    return np.where(significant, np.sqrt(np.clip(mean, 1, None)), 1.0)


def centred_stamp(psf: PsfStamps, h: int, w: int) -> np.ndarray:
    """The PSF at the image's centre, centred on a pixel, normalised to unit sum."""
    half = STAMP_HALF_PX
    size = 2 * half + 1
    row, col = h / 2, w / 2
    cut = stamp_slices(half + 0.5, half + 0.5, (size, size), half)
    _, _, s_rows, s_cols, offset_row, offset_col = cut
    stamp = np.asarray(psf.stamp(row, col, offset_row, offset_col, half))[s_rows, s_cols]
    return stamp / stamp.sum()


def _block_excess(
    residual: np.ndarray, sky: np.ndarray, usable: np.ndarray, psf: np.ndarray, block_px: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block: the filtered flux's spread squared over the sky's, the sky's variance, its median.

    The filter is the PSF's matched filter (the flux a star placed there would take in; the
    median in electrons). The sky varies slowly on the PSF's scale, so the filter's noise
    variance at a position is ``sky / sum(psf²)`` there; only ``usable`` positions count
    (:func:`_clear_of`). Every other position of each axis is enough: the filter is smooth on
    the PSF's scale.
    Shape ``hb wb`` each (blocks of ``block_px``; a last partial block joins the one before).
    """
    power = float((psf**2).sum())
    weighted = np.where(usable, np.nan_to_num(residual) / sky, 0.0).astype(np.float32)
    flux = fftconvolve(weighted, psf[::-1, ::-1].astype(np.float32), mode="same") * sky / power
    sky_var = sky / power
    h, w = residual.shape
    n_rows, n_cols = max(h // block_px, 1), max(w // block_px, 1)
    n_blocks = n_rows * n_cols
    # the last partial block joins the one before: every kept position's block
    block_rows = np.minimum(np.arange(0, h, 2) // block_px, n_rows - 1)
    block_cols = np.minimum(np.arange(0, w, 2) // block_px, n_cols - 1)
    blocks = (block_rows[:, None] * n_cols + block_cols[None, :]).ravel()
    keep = usable[::2, ::2].ravel()
    low, median, high, counts = _block_quantiles(
        flux[::2, ::2].ravel()[keep], blocks[keep], n_blocks
    )
    # the sky at each block's centre stands for the block's
    centre_rows = np.minimum(np.arange(n_rows) * block_px + block_px // 2, h - 1)
    centre_cols = np.minimum(np.arange(n_cols) * block_px + block_px // 2, w - 1)
    variance = sky_var[np.ix_(centre_rows, centre_cols)].ravel()
    spread = ((high - low) / (2 * _Z90)) ** 2 / variance
    # a block of mostly galaxies has nothing to measure the crowd on
    measured = counts >= block_px // 4
    excess = np.where(measured, spread, 1.0)
    centre = np.where(measured, median, 0.0)
    shape = (n_rows, n_cols)
    return excess.reshape(shape), variance.reshape(shape), centre.reshape(shape)


def _block_quantiles(
    values: np.ndarray, blocks: np.ndarray, n_blocks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 5, 50 and 95 % quantiles (linearly interpolated) of ``values`` per block, and counts.

    Blocks without values get 0 for every quantile.
    """
    # one sort on the block index plus the value scaled into [0, 1): within a block, by value
    if values.size:
        span = float(values.max() - values.min()) or 1.0
        key = blocks + 0.999 * (values - values.min()) / span
        ordered = values[np.argsort(key)]
    else:
        ordered = values
    counts = np.bincount(blocks, minlength=n_blocks)
    starts = np.cumsum(counts) - counts

    def quantile(q: float) -> np.ndarray:
        at = starts + q * np.clip(counts - 1, 0, None)
        below = np.floor(at).astype(int)
        above = np.minimum(below + 1, starts + np.clip(counts - 1, 0, None))
        if not ordered.size:
            return np.zeros(n_blocks)
        below, above = np.clip(below, 0, ordered.size - 1), np.clip(above, 0, ordered.size - 1)
        value = ordered[below] + (at - np.floor(at)) * (ordered[above] - ordered[below])
        return np.where(counts > 0, value, 0.0)

    return quantile(0.05), quantile(0.5), quantile(0.95), counts


def _clear_of(mask: np.ndarray, side: int) -> np.ndarray:
    """Positions whose ``side`` x ``side`` footprint holds no pixel of ``mask``."""
    return uniform_filter(mask.astype(np.float32), size=side, mode="constant") < 1e-6
