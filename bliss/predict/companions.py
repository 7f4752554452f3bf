"""Hidden companions: stars too close to a brighter one to be reported, folded into its intervals.

A star closer than about 1.5 PSF FWHM to a brighter one is almost never reported by the
sparse-field models: on the gate's ``crowded_stars`` fields (0.009 stars per px²) the
generalist found 0-22 % of the stars of r < 21.5 within 5 px (~1.4 FWHM) of a brighter one, and
70 % at 5-7 px. The reported star's fit then takes in the companion's light: a companion of
flux ``f`` at distance ``d`` adds ``f w(d)`` to the fitted flux, where ``w`` is the PSF's
autocorrelation normalised to 1 at 0 (what a PSF-weighted fit reads at an offset; measured on
those fields: 0.86, 0.77, 0.55, 0.28 and 0.10 at 0.5-4.5 px, the autocorrelation's
0.97-0.10), and pulls its position towards the companion. Stars with such a neighbour covered
their true r flux 0.3-0.4 of the time, the others 0.94. The residual does not show it (the fit
absorbs it) and neither does the block's confusion noise (:mod:`bliss.predict.confusion`),
which is measured over the whole block, not under the stars.

So each star's flux and position posteriors become mixtures over the companions it may hide:
their number is Poisson with mean ``pi R² rho``, ``rho`` the density of stars fainter than it
(and brighter than the faintest reported) in its block, corrected for those hidden in turn;
each is drawn from the block's reported stars (so it brings their colours), uniformly within
``R = BLIND_RADIUS_FWHM`` reference-band FWHM. The quantiles of ``estimate - contamination +
error`` (the error drawn from the catalog's own quantiles) replace the flux and position
quantiles. The point estimates are kept: having no companion stays the likeliest case. In a
sparse field a star hides a companion a few per cent of the time or less, below the 5 % tail
of a 90 % interval, so its intervals barely move.
"""

from collections.abc import Sequence

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import ndtri

from bliss.catalog import FullCatalog
from bliss.predict.confusion import centred_stamp
from bliss.predict.psf_photometry import PsfStamps, padded
from bliss.protocols import SurveyImage

__all__ = ["BLIND_RADIUS_FWHM", "widen_for_companions"]

#: radius, in reference-band FWHM, within which a fainter star is taken to be unreported
BLIND_RADIUS_FWHM = 1.5
#: side of the blocks whose reported stars give the density and the companions' fluxes, pixels
BLOCK_PX = 64
#: joint draws of companions and errors per star
N_DRAWS = 2048
#: radius, in FWHM, within which a brighter star hides a fainter one from the reported pool
HIDE_RADIUS_FWHM = 2.0
#: the most a star's density is raised for stars hidden in turn (e^1.5: ~0.2 stars per px²)
MAX_HIDDEN_LOG = 1.5
_CHUNK = 128
_SEED = 20261206


def widen_for_companions(
    image: SurveyImage,
    catalog: FullCatalog,
    psf_models: Sequence[PsfStamps],
    quantiles: Sequence[float],
    reference_band: int,
    pixel_scale_arcsec: float,
    block_px: int = BLOCK_PX,
) -> FullCatalog:
    """The catalog with its stars' flux and position quantiles mixed over hidden companions.

    Args:
        image: the image the catalog came from (its reference band's FWHM sets the radius).
        catalog: its one-image catalog, fluxes in nanomaggies.
        psf_models: each band's PSF model (its autocorrelation is that band's fit response).
        quantiles: the catalog's quantile levels (``fluxes@<q>``, ``plocs@<q>``).
        reference_band: index of the band whose flux orders stars (fainter, brighter).
        pixel_scale_arcsec: pixel side.
        block_px: block side for the density, pixels.
    """
    n = int(catalog["n_sources"][0])
    levels = sorted(q for q in quantiles if f"fluxes@{q:g}" in catalog)
    if n == 0 or not levels:
        return catalog
    star = (
        catalog["prob_galaxy"][0, :n, 0].numpy() < 0.5
        if "prob_galaxy" in catalog
        else np.ones(n, dtype=bool)
    )
    fluxes = catalog["fluxes"][0, :n].double().numpy()
    positions = catalog["plocs"][0, :n].double().numpy()
    fwhm_px = float(image.psf_fwhm_arcsec[reference_band]) / pixel_scale_arcsec
    radius = BLIND_RADIUS_FWHM * fwhm_px
    responses = [_fit_response(psf, image.images.shape[1:]) for psf in psf_models]
    rate, blocks, pools = _companion_rates(
        positions,
        fluxes,
        star,
        reference_band,
        (radius, HIDE_RADIUS_FWHM * fwhm_px),
        block_px,
        image.images.shape[1:],
    )
    rng = np.random.default_rng(_SEED)
    grid = ndtri((np.arange(N_DRAWS) + 0.5) / N_DRAWS)
    data = dict(catalog.items())
    flux_keys = [f"fluxes@{q:g}" for q in levels]
    position_keys = [f"plocs@{q:g}" for q in levels if f"plocs@{q:g}" in catalog]
    new = {key: catalog[key][0, :n].double().numpy().copy() for key in flux_keys + position_keys}
    chosen = np.flatnonzero(star & (rate > 0))
    for start in range(0, len(chosen), _CHUNK):
        index = chosen[start : start + _CHUNK]
        light, shift = _contamination(
            index, rate, blocks, pools, fluxes, reference_band, radius, responses, rng
        )
        hit = (light != 0).any(axis=(1, 2))
        if not hit.any():
            continue
        index, light, shift = index[hit], light[hit], shift[hit]
        old = np.stack([catalog[k][0, index].double().numpy() for k in flux_keys], -1)
        mixed = _mixed_quantiles(old, levels, grid, light, fluxes[index])
        for slot, key in enumerate(flux_keys):
            new[key][index] = mixed[..., slot]
        if position_keys:
            old = np.stack([catalog[k][0, index].double().numpy() for k in position_keys], -1)
            mixed = _mixed_quantiles(old, levels, grid, shift, positions[index])
            for slot, key in enumerate(position_keys):
                new[key][index] = mixed[..., slot]
    for key, value in new.items():
        data[key] = padded(catalog[key], value)
    return FullCatalog(catalog.height_px, catalog.width_px, data)


def _fit_response(psf: PsfStamps, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The PSF's autocorrelation over 1 at 0, radially: ``(radii in px, response)``."""
    stamp = centred_stamp(psf, *shape)
    auto = fftconvolve(stamp, stamp[::-1, ::-1], mode="full")
    centre = np.unravel_index(np.argmax(auto), auto.shape)
    rows, cols = np.indices(auto.shape)
    radii, inverse = np.unique(
        np.round(np.hypot(rows - centre[0], cols - centre[1]), 3).ravel(), return_inverse=True
    )
    profile = np.bincount(inverse, auto.ravel()) / np.bincount(inverse)
    return radii, np.clip(profile / auto.max(), 0, 1)


def _companion_rates(
    positions: np.ndarray,
    fluxes: np.ndarray,
    star: np.ndarray,
    band: int,
    radii: tuple[float, float],
    block_px: int,
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Each star's expected number of hidden companions, each source's block, the blocks' pools.

    Blocks are the confusion noise's (:mod:`bliss.predict.confusion`: a last partial block joins
    the one before), each with its own area. Pool: the block's stars by rising reference flux,
    and the cumulative weights ``exp(hidden)`` of each (raised for the share of stars of its flux
    that a brighter one hides, ``1 - exp(-pi hide_radius² rho(> f))``). ``radii``: the blind
    radius and the hiding radius, pixels.
    """
    n = len(fluxes)
    rate = np.zeros(n)
    counts = [max(size // block_px, 1) for size in shape]
    index = [
        np.clip((positions[:, axis] // block_px).astype(int), 0, counts[axis] - 1)
        for axis in (0, 1)
    ]
    blocks = index[0] * counts[1] + index[1]
    area, hiding = np.pi * radii[0] ** 2, np.pi * radii[1] ** 2
    pools = {}
    for block in np.unique(blocks[star]):
        members = np.flatnonzero(star & (blocks == block))
        sides = [
            size - (counts[axis] - 1) * block_px if i == counts[axis] - 1 else block_px
            for axis, (i, size) in enumerate(zip(divmod(int(block), counts[1]), shape, strict=True))
        ]
        block_area = float(sides[0] * sides[1])
        order = members[np.argsort(fluxes[members, band])]  # faint to bright
        flux = fluxes[order, band]
        weight = np.ones(len(order))
        brighter = 0.0  # true stars per block brighter than the one at hand
        for k in range(len(order) - 1, -1, -1):
            weight[k] = np.exp(min(hiding * brighter / block_area, MAX_HIDDEN_LOG))
            brighter += weight[k]
        cumulative = np.cumsum(weight)
        pools[int(block)] = order, cumulative
        # companions of a star: the pool's stars strictly fainter than it
        fainter = np.searchsorted(flux, flux, side="left")
        below = np.where(fainter > 0, cumulative[np.maximum(fainter - 1, 0)], 0.0)
        rate[order] = area * below / block_area
    return rate, blocks, pools


def _contamination(
    index: np.ndarray,
    rate: np.ndarray,
    blocks: np.ndarray,
    pools: dict[int, tuple[np.ndarray, np.ndarray]],
    fluxes: np.ndarray,
    band: int,
    radius: float,
    responses: Sequence[tuple[np.ndarray, np.ndarray]],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws of the light hidden companions add (``m N_DRAWS c``) and the shift (``m N_DRAWS 2``)."""
    m, n_bands = len(index), fluxes.shape[1]
    light = np.zeros((m, N_DRAWS, n_bands))
    shift = np.zeros((m, N_DRAWS, 2))
    counts = rng.poisson(rate[index][:, None], size=(m, N_DRAWS))
    owner, draw = np.nonzero(counts)
    repeats = counts[owner, draw]
    owner, draw = np.repeat(owner, repeats), np.repeat(draw, repeats)
    if owner.size == 0:
        return light, shift
    companions = np.empty(owner.size, dtype=int)
    for slot, source in enumerate(index):
        pick = owner == slot
        if not pick.any():
            continue
        order, cumulative = pools[int(blocks[source])]
        fainter = np.searchsorted(fluxes[order, band], fluxes[source, band], side="left")
        total = cumulative[fainter - 1]
        companions[pick] = order[np.searchsorted(cumulative, rng.random(pick.sum()) * total)]
    distance = radius * np.sqrt(rng.random(owner.size))
    angle = 2 * np.pi * rng.random(owner.size)
    weight = np.stack([np.interp(distance, *response) for response in responses], -1)
    added = fluxes[companions] * weight
    np.add.at(light, (owner, draw), added)
    offset = np.stack([np.sin(angle), np.cos(angle)], -1) * distance[:, None]
    pull = np.zeros((m, N_DRAWS, 2))
    np.add.at(pull, (owner, draw), added[:, band : band + 1] * offset)
    primary = np.clip(fluxes[index, band], 1e-9, None)[:, None, None]
    shift = pull / (primary + light[..., band : band + 1])
    return light, shift


def _mixed_quantiles(
    old: np.ndarray,
    levels: Sequence[float],
    grid: np.ndarray,
    offset: np.ndarray,
    point: np.ndarray,
) -> np.ndarray:
    """Quantiles of ``error - offset``, the error's distribution given by the old quantiles.

    ``old``: ``m d k`` (k levels), ``offset``: ``m N_DRAWS d``, ``point``: ``m d``. The error's
    inverse CDF is piecewise linear in the normal deviate through the old quantiles (and the
    point estimate at 0 when 0.5 is not among them), extended by its outer slopes.
    """
    z = ndtri(np.asarray(levels, dtype=np.float64))
    values = old
    if not np.any(np.isclose(z, 0)):
        z = np.append(z, 0.0)
        values = np.concatenate([old, point[..., None]], -1)
    order = np.argsort(z)
    z, values = z[order], values[..., order]
    draws = _piecewise(grid, z, values)  # m d N
    mixed = np.sort(draws - np.moveaxis(offset, 1, -1), axis=-1)
    at = np.asarray(levels) * N_DRAWS - 0.5
    return np.stack([_sorted_quantile(mixed, a) for a in at], -1)


def _piecewise(x: np.ndarray, z: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (``... k``, at sorted ``z``) linearly interpolated at ``x``, extrapolated."""
    if len(z) == 1:
        return np.repeat(values, len(x), axis=-1)
    slot = np.clip(np.searchsorted(z, x) - 1, 0, len(z) - 2)
    left, right = values[..., slot], values[..., slot + 1]
    frac = (x - z[slot]) / (z[slot + 1] - z[slot])
    return left + frac * (right - left)


def _sorted_quantile(ordered: np.ndarray, at: float) -> np.ndarray:
    """The value at fractional position ``at`` along the last axis of sorted ``ordered``."""
    below = int(np.clip(np.floor(at), 0, ordered.shape[-1] - 1))
    above = min(below + 1, ordered.shape[-1] - 1)
    frac = float(np.clip(at - below, 0, 1))
    return ordered[..., below] + frac * (ordered[..., above] - ordered[..., below])
