"""Stars whose cores saturated: found from the image's saturation mask, measured on their wings.

A saturated star's core is missing data (SDSS frames and FITS inputs with a ``SATURATE`` level
set it to NaN), so the network sees a hole ringed by bright wings. On SDSS 94-1-12 the shipped
model reported nothing for an r = 10.3 star; in the core of M2 the crowded model reported pieces
of the ring around five saturated stars and none of the stars. Survey pipelines measure such a
star by fitting the PSF to its unsaturated pixels (SDSS PHOTO, DAOPHOT);
:func:`recover_saturated_stars` does so for each blob of saturated pixels:

1. a grid search in the reference band, from the blob's thickest point (a bleed trail is one or
   two pixels wide, the core is not), finds the position whose PSF best fits the usable pixels
   (not saturated, not next to a saturated pixel) within ``MIN_HALF_PX + CORE_RADII`` core radii;
2. each band's flux is a non-negative weighted least-squares fit there, with a local sky, the
   catalog's detections within half that distance fitted with it (their network fluxes as a
   prior) and the brightest further out fitted in turn around it; each band on the pixels its
   own saturation mask leaves (a star saturated in r may not be in u);
3. the detections centred within :data:`CLAIM_PX` of the blob's pixels are pieces of the star and
   are replaced by it (the brightest one's row keeps its other columns); the detections where
   the star's PSF error swamps the photon noise are dropped unless the fit needs them at
   :data:`MIN_NEIGHBOUR_SNR`, and the light of the faint sources hidden there, estimated from
   the catalog's light per pixel around, is taken from the star's flux and added to its error;
4. the flux is divided by the ratio of wing to whole-star fits measured on the image's own
   unsaturated stars with their cores cut out (:class:`~bliss.predict.wing_fit.WingCorrection`):
   a survey PSF model's wings are off by percents, which a fit on the wings alone multiplies.

The fits are :mod:`bliss.predict.wing_fit`'s; a pixel's variance there counts the PSF model's
error. ``docs/photometry.md`` and ``benchmarks/bench_saturated_stars.py`` say how well this
measures real stars.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.special import ndtri

from bliss.catalog import FullCatalog
from bliss.predict.psf_photometry import LOCAL_SKY_KEY, PsfStamps, flux_per_electron
from bliss.predict.wing_fit import (
    DILATE_PX,
    BandFit,
    fit_band,
    fit_half_px,
    log_odds,
    stamp_on,
    wing_correction,
)
from bliss.protocols import SurveyImage

__all__ = [
    "CLAIM_PX",
    "SaturatedStar",
    "recover_saturated_stars",
    "saturated_blobs",
    "with_saturated_stars",
]

#: a detection centred within this of a saturated pixel's centre is a piece of the star, pixels
CLAIM_PX = 2.0
#: position error added in quadrature, pixels: the fine grid's step, and what faint sources
#: under the wings move (on simulated M2-like fields with the exact PSF, 90 % intervals without
#: it held 0.55-0.71 of the saturated stars)
POSITION_FLOOR_PX = 0.08
#: without enough calibration stars, a wing fit's fractional error is at least this times
#: sqrt(lost / (1 - lost)) (``lost``: the share of the PSF's light on unusable pixels): what
#: 59 real unsaturated SDSS stars cut to 1.5-5 px scattered by about the full fits
WING_FLUX_FLOOR = 0.02
#: ... and every flux's at least this (a PSF fit of the whole star, as psf_photometry's floor)
FLUX_FLOOR = 0.003
#: a detection the star's PSF error swamps is kept only at this S/N in the joint fit
MIN_NEIGHBOUR_SNR = 5.0
#: the brightest this many detections around a star are modelled (a cluster core holds
#: thousands, most too faint to matter beside a saturated star; the cost is per detection)
MAX_NEIGHBOURS = 60
#: a blob is a star only if the fit's peak reaches this share of the brightest pixel next to it
#: (a saturated core outshines its unsaturated ring; a hot pixel or a bad column on sky does not)
MIN_PEAK_SHARE = 0.5
#: a joint sample's source within this of a detection the point estimate lost is lost too, px
MATCH_PX = 1.0
#: what a star's row holds in keys its fit does not give (a PSF fit with its own local sky)
_NEW_ROW_FILL = {
    "prob_source": 1.0,
    "prob_galaxy": 0.0,
    "source_type": 0.0,
    "crowded": 0.0,  # regional.CROWDED_KEY: a new row is the fit's, not the crowded model's
    LOCAL_SKY_KEY: 1.0,
}


@dataclass(frozen=True)
class SaturatedStar:
    """One star measured on its wings.

    Attributes:
        plocs: position ``(row, col)``, pixels (origin at the image corner). Shape ``2``.
        plocs_sigma: its standard deviations. Shape ``2``.
        fluxes: flux per band, the image's nanomaggies. Shape ``c``.
        fluxes_sigma: their standard deviations. Shape ``c``.
        saturated_bands: whether the star saturated in each band. Shape ``c``.
        lost: the share of its PSF light on unusable pixels, per band (NaN: not fitted).
            Shape ``c``.
        replaced: catalog rows that were pieces of it (the first keeps its row). Shape ``k``.
        dropped: catalog rows of its wings' detections the fit did not need. Shape ``j``.
        reduced_chi2: the reference band fit's chi-square per degree of freedom.
        blob: its saturated pixels' ``(row, col)`` indices. Shape ``k 2``.
        removed_plocs: positions of the replaced and dropped detections. Shape ``r 2``.
    """

    plocs: np.ndarray
    plocs_sigma: np.ndarray
    fluxes: np.ndarray
    fluxes_sigma: np.ndarray
    saturated_bands: np.ndarray
    lost: np.ndarray
    replaced: np.ndarray
    dropped: np.ndarray
    reduced_chi2: float
    blob: np.ndarray
    removed_plocs: np.ndarray


def saturated_blobs(saturated: np.ndarray) -> list[np.ndarray]:
    """The connected blobs (8-neighbour) of pixels saturated in any band.

    ``saturated``: ``c h w``. Each blob is its pixels' ``(row, col)`` indices, ``k 2``.
    """
    union = np.asarray(saturated, dtype=bool).any(axis=0)
    labels, _ = ndimage.label(union, structure=np.ones((3, 3), dtype=bool))
    blobs = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        corner = np.array([box[0].start, box[1].start])
        blobs.append(np.argwhere(labels[box] == index) + corner)
    return blobs


def _depth(blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's distance to the blob's border on its box (one pixel of padding each side).

    Returns the distances (``h w``) and the box's first pixel less the padding.
    """
    corner = blob.min(0)
    box = np.zeros(blob.max(0) - corner + 3, dtype=bool)
    box[tuple((blob - corner + 1).T)] = True
    return ndimage.distance_transform_edt(box), corner - 1


def _thickest_point(blob: np.ndarray) -> np.ndarray:
    """``(row, col)`` (pixel centres at +0.5) of the blob's pixels farthest from its border."""
    depth, origin = _depth(blob)
    return np.argwhere(depth == depth.max()).mean(0) + origin + 0.5


def _within(plocs: np.ndarray, blob: np.ndarray, radius: float) -> np.ndarray:
    """Which of ``plocs`` (``n 2``) lie within ``radius`` of a pixel centre of ``blob``."""
    inside = np.zeros(len(plocs), dtype=bool)
    # only those within the blob's box: the query then costs per blob, not per catalog
    box = (plocs >= blob.min(0) - radius).all(-1) & (plocs <= blob.max(0) + 1 + radius).all(-1)
    if box.any():
        distance, _ = cKDTree(blob + 0.5).query(plocs[box], distance_upper_bound=radius + 1e-9)
        inside[box] = np.isfinite(distance)
    return inside


def _box(centre: np.ndarray, half: int) -> tuple[slice, slice]:
    row, col = int(math.floor(centre[0])), int(math.floor(centre[1]))
    return slice(row - half, row + half + 1), slice(col - half, col + half + 1)


def _ring_max(image: SurveyImage, band: int, blob: np.ndarray) -> float:
    """The brightest usable pixel (sky subtracted) within 3 px of the blob, in ``band``."""
    height, width = image.images.shape[1:]
    top, left = np.maximum(blob.min(0) - 3, 0)
    bottom, right = np.minimum(blob.max(0) + 4, [height, width])
    data = (
        image.images[band, top:bottom, left:right] - image.background[band, top:bottom, left:right]
    )
    near = np.zeros(data.shape, dtype=bool)
    near[tuple((blob - [top, left]).T)] = True
    unusable = ndimage.binary_dilation(near, np.ones((2 * DILATE_PX + 1,) * 2, dtype=bool))
    ring = ndimage.binary_dilation(near, np.ones((7, 7), dtype=bool)) & ~unusable
    values = data[ring & np.isfinite(data)]
    return float(values.max()) if values.size else 0.0


def recover_saturated_stars(
    image: SurveyImage,
    catalog: FullCatalog,
    psf_models: Sequence[PsfStamps],
    reference_band: int,
) -> list[SaturatedStar]:
    """Fit one star to each blob of the image's saturated pixels (see the module docstring).

    Args:
        image: the image (electrons, sky included), with ``saturated`` (``c h w``).
        catalog: its one-image catalog, ``fluxes`` in the image's nanomaggies.
        psf_models: each band's PSF (:func:`~bliss.predict.psf_photometry.nominal_psf_models`).
        reference_band: the band the positions are fitted in.

    Returns:
        One :class:`SaturatedStar` per blob whose fit converged (none without ``saturated``).
    """
    if image.saturated is None or not np.asarray(image.saturated).any():
        return []
    n = int(catalog["n_sources"][0])
    positions = catalog["plocs"][0, :n].double().numpy()
    fluxes = catalog["fluxes"][0, :n].double().numpy()
    saturated = np.asarray(image.saturated, dtype=bool)
    tree = cKDTree(positions) if n else None
    order = [reference_band] + [b for b in range(len(image.bands)) if b != reference_band]
    per_electron = np.array([flux_per_electron(image, b) for b in range(len(image.bands))])
    subtracted = image.images - image.background
    point = (
        catalog["prob_galaxy"][0, :n, 0].numpy() < 0.5
        if "prob_galaxy" in catalog
        else np.ones(n, dtype=bool)
    )
    corrections = [
        wing_correction(
            subtracted[b],
            image.background[b],
            saturated[b],
            psf_models[b],
            positions[point],
            fluxes[point, b] / per_electron[b],
        )
        for b in range(len(image.bands))
    ]
    stars = []
    taken = np.zeros(n, dtype=bool)
    # the stars fitted so far are neighbours of the next ones: their light is in its wings
    fitted_positions, fitted_fluxes = np.zeros((0, 2)), np.zeros((0, len(image.bands)))
    for blob in saturated_blobs(saturated):
        start = _thickest_point(blob)
        half = fit_half_px(float(_depth(blob)[0].max()))
        reach = max(half * math.sqrt(2), float(np.abs(blob + 0.5 - start).max()) * 2 + CLAIM_PX)
        close = np.array(tree.query_ball_point(start, reach) if n else [], dtype=int)
        close = close[~taken[close]]
        claimed = close[_within(positions[close], blob, CLAIM_PX)]
        box = (np.abs(positions[close] - start) <= half).all(-1)
        nearby = np.setdiff1d(close[box], claimed)
        neighbours = nearby[np.argsort(-fluxes[nearby, reference_band])[:MAX_NEIGHBOURS]]
        earlier = (np.abs(fitted_positions - start) <= half).all(-1)
        around = np.concatenate([positions[neighbours], fitted_positions[earlier]])
        light = np.concatenate([fluxes[neighbours], fitted_fluxes[earlier]]) / per_electron
        fitted: dict[int, BandFit] = {}
        for band in order:
            fit = fit_band(
                subtracted[band],
                image.background[band],
                saturated[band],
                psf_models[band],
                start if band == reference_band else fitted[reference_band].position,
                half,
                around,
                light[:, band],
                move=band == reference_band,
            )
            if fit is None:
                if band == reference_band:
                    break
                continue
            fitted[band] = fit
        if reference_band not in fitted:
            continue
        ref = fitted[reference_band]
        ring_max = _ring_max(image, reference_band, blob)
        peak = ref.flux * float(
            stamp_on(psf_models[reference_band], ref.position, _box(ref.position, 2), 2).max()
        )
        if not peak >= MIN_PEAK_SHARE * ring_max:  # no star there (a hot pixel, a bad column)
            continue
        bands = len(image.bands)
        in_band = saturated[:, blob[:, 0], blob[:, 1]].any(-1)
        flux = np.full(bands, np.nan)
        sigma = np.full(bands, np.inf)
        # the catalog's light around the star, beyond the zone its wings swamp
        swamped = ref.swamped(positions[nearby])
        kept = nearby[~swamped]
        for band, fit in fitted.items():
            factor, error = 1.0, WING_FLUX_FLOOR * math.exp(0.5 * float(log_odds(fit.lost)))
            if corrections[band] is not None:
                factor, error = corrections[band](fit.lost)
            around = np.clip(fluxes[kept, band], 0, None) / per_electron[band]
            hidden, spread = fit.hidden_light(around)
            value = max(fit.flux / factor - hidden, 0.0)
            flux[band] = value * per_electron[band]
            error = max(error, FLUX_FLOOR)
            total = math.hypot(math.hypot(fit.sigma / factor, error * value), spread)
            sigma[band] = total * per_electron[band]
        replaced = claimed
        if len(replaced):
            replaced = replaced[np.argsort(-fluxes[replaced, reference_band])]
        # a detection where the star's PSF error swamps the photon noise stays only if the fit
        # needs it; one too faint to be modelled never would
        modelled = np.zeros(n, dtype=bool)
        modelled[neighbours] = ref.neighbour_snr[: len(neighbours)] >= MIN_NEIGHBOUR_SNR
        weak = swamped & ~modelled[nearby]
        dropped = nearby[weak]
        taken[replaced] = True
        taken[dropped] = True
        stars.append(
            SaturatedStar(
                plocs=ref.position,
                plocs_sigma=np.hypot(ref.position_sigma, POSITION_FLOOR_PX),
                fluxes=flux,
                fluxes_sigma=sigma,
                saturated_bands=in_band,
                lost=np.array([fitted[b].lost if b in fitted else np.nan for b in range(bands)]),
                replaced=replaced,
                dropped=dropped,
                reduced_chi2=ref.reduced_chi2,
                blob=blob,
                removed_plocs=positions[np.concatenate([replaced, dropped])],
            )
        )
        fitted_positions = np.concatenate([fitted_positions, ref.position[None]])
        fitted_fluxes = np.concatenate([fitted_fluxes, np.nan_to_num(flux)[None]])
    return stars


def with_saturated_stars(
    catalog: FullCatalog,
    stars: Sequence[SaturatedStar],
    quantiles: Sequence[float] = (),
    rng: np.random.Generator | None = None,
) -> FullCatalog:
    """``catalog`` with each star in, its pieces and its wings' detections out.

    The point estimate (``rng`` None: the catalog the stars were fitted on) takes each star's
    fitted values, with Gaussian ``<key>@<q>`` quantiles, in the row of the first detection it
    replaced. A joint sample (``rng`` given) draws them from the fit's Gaussian, and, as its
    sources are not the point estimate's, loses those within :data:`CLAIM_PX` of the star's
    saturated pixels or within :data:`MATCH_PX` of a detection the point estimate lost. A star
    has ``prob_source`` 1, ``prob_galaxy`` and ``source_type`` 0 and the local-sky mark 1; a
    reused row keeps its other keys (``crowded``: the model of its block), a new row has NaN in
    them (``crowded`` 0).
    """
    n = int(catalog["n_sources"][0])
    data = {k: v[:, :n].clone() for k, v in catalog.items() if k != "n_sources"}
    plocs = data["plocs"][0].double().numpy()
    keep = np.ones(n, dtype=bool)
    new_rows = []
    for star in stars:
        values = dict(_star_values(star, quantiles, rng))
        row = None
        if rng is None:
            keep[star.dropped] = False
            keep[star.replaced[1:]] = False
            row = int(star.replaced[0]) if len(star.replaced) else None
        else:
            keep &= ~_within(plocs, star.blob, CLAIM_PX)
            if len(star.removed_plocs) and n:
                distance, _ = cKDTree(star.removed_plocs).query(plocs)
                keep &= distance > MATCH_PX
        if row is None:
            new_rows.append(values)
            continue
        for key, value in values.items():
            if key in data:
                data[key][0, row] = torch.as_tensor(value, dtype=data[key].dtype)
        # the row's crowded mark (the model of its block) stays
        for key, fill in _NEW_ROW_FILL.items():
            if key in data and key != "crowded":
                data[key][0, row] = fill
    data = {k: v[:, torch.from_numpy(keep)] for k, v in data.items()}
    if new_rows:
        for key, value in data.items():
            fill = _NEW_ROW_FILL.get(key, float("nan"))
            block = torch.full((1, len(new_rows), value.shape[-1]), fill, dtype=value.dtype)
            for i, values in enumerate(new_rows):
                if key in values:
                    block[0, i] = torch.as_tensor(values[key], dtype=value.dtype)
            data[key] = torch.cat([value, block], dim=1)
    count = int(data["plocs"].shape[1])
    return FullCatalog(
        catalog.height_px, catalog.width_px, {"n_sources": torch.tensor([count]), **data}
    )


def _star_values(
    star: SaturatedStar, quantiles: Sequence[float], rng: np.random.Generator | None
) -> list[tuple[str, np.ndarray]]:
    """The catalog values of one star: point estimate and quantiles, or one Gaussian draw."""
    sigma = np.where(np.isfinite(star.fluxes_sigma), star.fluxes_sigma, 0.0)
    position_sigma = np.where(np.isfinite(star.plocs_sigma), star.plocs_sigma, 0.0)
    fluxes = np.where(np.isfinite(star.fluxes), star.fluxes, 0.0)
    if rng is not None:
        draw_flux = np.clip(fluxes + sigma * rng.standard_normal(len(fluxes)), 0, None)
        draw_position = star.plocs + position_sigma * rng.standard_normal(2)
        return [("plocs", draw_position), ("fluxes", draw_flux)]
    values = [("plocs", star.plocs), ("fluxes", fluxes)]
    for q in quantiles:
        z = float(ndtri(q))
        values += [(f"fluxes@{q:g}", fluxes + z * sigma)]
        values += [(f"plocs@{q:g}", star.plocs + z * position_sigma)]
    return values
