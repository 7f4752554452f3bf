"""PSF-fit photometry of the stars the network found: fluxes at the physical limit for bright stars.

Given positions, the likelihood of a star's flux is Gaussian-like and linear in the flux for a
known PSF, so a weighted least-squares fit reaches the Cramer-Rao bound
(:func:`bliss.metrics.photometry.flux_cramer_rao_std`). The network's flux posterior is broader
than that for bright stars (its heads see normalised, compressed pixels), and it is only as
calibrated as its training prior. :func:`refine_star_fluxes` fits every star the network found
(``prob_galaxy < 0.5``) jointly with its star neighbours, in each band, and keeps, per star and
band, whichever of the two posteriors is narrower: the fit wins for bright stars, the network
(whose prior matters near the detection limit) for faint ones. A bright source the network
called a galaxy that the image's own PSF model explains is a star too (its ``prob_galaxy``
becomes 0).

The PSF is the image's own model where it has one (``SurveyImage.psf``: an SDSS frame's psField
PSF with the model's halo, the model its aperture correction refers to, which then scales the
fitted fluxes too). Otherwise it is a Moffat profile whose FWHM and beta are fitted to the
image's own bright isolated stars (as DAOPHOT builds its PSF from the frame), so a PSF that
differs from the header's nominal one does not bias the fluxes; with too few such stars the
header FWHM and ``default_beta`` are used, and the fluxes are put on a large aperture's scale.
Intervals are Gaussian, widened by the fit's reduced chi-square when it exceeds 1 (a PSF that
still does not match).

Stars fitted at S/N >= :data:`POSITION_SNR` move too (DAOPHOT fits x, y and flux). Their
positions in the reference band replace the network's where the fit's interval is narrower:
for stars at r < 20 the network's 90 % location intervals are twice as wide as the fit's and
cover 0.97, its errors 1.6 times the fit's. Not in the blocks of a crowded tangle (below).
"""

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import ndtri

from bliss.catalog import FullCatalog
from bliss.predict.psf_model import (
    MAX_SHAPE_STARS,
    STAMP_HALF_PX,
    ImagePsf,
    MoffatShape,
    fit_moffat_shape,
    stamp_slices,
)
from bliss.protocols import SurveyImage

__all__ = [
    "LOCAL_SKY_KEY",
    "PsfStamps",
    "flux_per_electron",
    "near",
    "network_sigma",
    "nominal_psf_models",
    "padded",
    "refine_star_fluxes",
]

#: a PSF model that draws a star's stamp (:mod:`bliss.predict.psf_model`)
PsfStamps = MoffatShape | ImagePsf
#: catalog key (``1 n c``, 0 or 1, not written out): the flux is a fit with its own local sky
#: term, which took up the light around the star that the image's background does not hold
LOCAL_SKY_KEY = "local_sky"

#: fractional flux error added in quadrature to the fit's: what a PSF model good to a few
#: tenths of a percent of the light within the stamp leaves (sub-pixel sampling, centring)
FLUX_FLOOR = 0.003
#: stars at this S/N or above also get their position fitted (below it the step is noise)
POSITION_SNR = 20.0
#: pixels this close to a galaxy's centre are left out of star fits, pixels
GALAXY_MASK_PX = 4.0
#: radius of the aperture that puts PSF-fit fluxes on a model-free scale, in FWHM
APERTURE_FWHM = 4.0
#: S/N of the stars the aperture correction is measured on, and how many it needs
APERTURE_SNR = 30.0
MIN_APERTURE_STARS = 5
#: sources get PSF-fit fluxes only below this P(galaxy): a PSF fit of a compact galaxy is low ...
STAR_PROB = 0.2
#: ... unless, with an image's own PSF model, the fit reaches this S/N and still finds a point
#: source: so bright, a galaxy's extent would show in the misfit, and the network's P(galaxy)
#: of near-saturated real stars is unsure
SURE_POINT_SNR = 100.0
#: stars the fit measures at this S/N or better take its flux even where the network's
#: interval is narrower (the network's is not calibrated under another PSF)
FIT_SNR = 10.0
#: a fit whose reduced chi-square exceeds this did not find a point source there ...
POINT_CHI2 = 3.0
#: ... where, with an image's own PSF model (``SurveyImage.psf``), the chi-square allows it this
#: fractional error per pixel (DAOPHOT's "profile error"): a bright star's counts expose a
#: survey PSF model's percent-level errors, which would otherwise call every star brighter than
#: S/N ~100 extended. A Moffat fitted to the image's own stars gets none
PROFILE_ERROR = 0.1
#: stars fitted together at most; a larger tangle (a crowded field) is fitted in blocks
MAX_GROUP = 20
#: a tangle's blocks: each fits the stars within ``BLOCK_MARGIN_PX`` of its side, with the light
#: of all others subtracted, and keeps the fluxes of the stars inside it
BLOCK_PX = 24
BLOCK_MARGIN_PX = 4
#: with an image's own PSF model, the aperture its total fluxes refer to, arcsec (SDSS PHOTO's
#: PSF magnitudes are calibrated to the light within 7.43")
TOTAL_APERTURE_ARCSEC = 7.43
#: the fit's prior on each star's flux: the network's, give or take the larger of itself and
#: this many of its posterior sigmas. Weak on purpose (the network's fluxes can be biased where
#: its prior is wrong, as in a crowded field): it only settles what the pixels cannot, such as
#: the split of light between two detections closer than the PSF resolves
PRIOR_WIDEN = 3.0
#: the prior on a moving star's position step, pixels (keeps coincident stars from diverging)
SHIFT_PRIOR_PX = 0.5
#: the aperture correction is applied when it differs from 1 by this many standard errors
APERTURE_SIGNIFICANCE = 3.0
#: a field where more than this share of the stars have another detection inside their aperture
#: or sky annulus is crowded: the stars below its detection limit raise every annulus's sky
#: (isolated stars' too), so its apertures measure no correction (a 16 % one in i, seen)
MAX_CROWDED_APERTURES = 0.5


def _groups(positions: np.ndarray, radius: float) -> list[list[int]]:
    """Stars closer than ``radius`` (transitively) are fitted together."""
    parent = list(range(len(positions)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(positions) > 1:
        for i, j in cKDTree(positions).query_pairs(radius):
            parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    for i in range(len(positions)):
        members.setdefault(root(i), []).append(i)
    return list(members.values())


def _fit_sets(positions: np.ndarray, radius: float) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """What is fitted together: ``(members, kept, block)``, index arrays into ``positions``.

    Stars closer than ``radius`` (transitively) are fitted together and all keep their fits. A
    tangle of more than :data:`MAX_GROUP` (a crowded field) would need a design matrix that
    grows with the square of its size, so it is cut into blocks of :data:`BLOCK_PX`: each block
    fits its stars and those within :data:`BLOCK_MARGIN_PX` of it (the light they share pulls
    on both), and keeps only its own.
    """
    sets = []
    for group in _groups(positions, radius):
        group = np.asarray(group)
        if len(group) <= MAX_GROUP:
            sets.append((group, group, False))
            continue
        # each star belongs to the blocks whose side, widened by the margin, holds it: at most
        # two per axis, so the cost grows with the stars, not stars x blocks
        first = np.floor((positions[group] - BLOCK_MARGIN_PX) / BLOCK_PX).astype(int)
        last = np.floor((positions[group] + BLOCK_MARGIN_PX) / BLOCK_PX).astype(int)
        own = np.floor(positions[group] / BLOCK_PX).astype(int)
        members: dict[tuple[int, int], list[int]] = {}
        kept: dict[tuple[int, int], list[int]] = {}
        for star, (r0, c0), (r1, c1), cell in zip(group, first, last, own, strict=True):
            kept.setdefault(tuple(cell), []).append(star)
            for row in range(r0, r1 + 1):
                for col in range(c0, c1 + 1):
                    members.setdefault((row, col), []).append(star)
        for cell in sorted(kept):
            sets.append((np.array(members[cell]), np.array(kept[cell]), True))
    return sets


def _design(
    positions: np.ndarray,
    top: int,
    left: int,
    region: tuple[int, int],
    psf: PsfStamps,
    half: int,
    slopes: np.ndarray,
    centred: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """PSF stamps of each star on the region, and the derivatives in row and col of ``slopes``.

    ``centred``: the stamps of an earlier call, kept for the stars whose ``slopes`` is False
    (they have not moved since). Shapes: ``n h w``, and ``m h w`` for the ``m`` slopes.
    """
    step = 0.05
    update = np.ones(len(positions), dtype=bool) if centred is None else slopes
    centred = np.zeros((len(positions), *region)) if centred is None else centred.copy()
    d_row, d_col = np.zeros((2, int(slopes.sum()), *region))
    slope_index = np.cumsum(slopes) - 1
    for k in np.flatnonzero(update | slopes):
        row, col = positions[k]
        cut = stamp_slices(row - top, col - left, region, half)
        if cut is None:
            return None
        rows, cols, s_rows, s_cols, offset_row, offset_col = cut
        stamp = psf.stamp(row, col, offset_row, offset_col, half)[s_rows, s_cols]
        if update[k]:
            centred[k] = 0
            centred[k, rows, cols] = stamp
        if slopes[k]:
            for out, (dr, dc) in ((d_row, (step, 0)), (d_col, (0, step))):
                moved = psf.stamp(row, col, offset_row + dr, offset_col + dc, half)
                out[slope_index[k], rows, cols] = (moved[s_rows, s_cols] - stamp) / step
    return centred, d_row, d_col


def _region(positions: np.ndarray, image_shape: tuple[int, int], half: int) -> tuple[slice, slice]:
    """Rows and columns within ``half`` pixels of a group of stars: the pixels its fit uses."""
    top = max(int(math.floor(positions[:, 0].min())) - half, 0)
    left = max(int(math.floor(positions[:, 1].min())) - half, 0)
    bottom = min(int(math.floor(positions[:, 0].max())) + half + 1, image_shape[0])
    right = min(int(math.floor(positions[:, 1].max())) + half + 1, image_shape[1])
    return slice(top, bottom), slice(left, right)


def _fit_group(
    data: np.ndarray,
    background: np.ndarray,
    positions: np.ndarray,
    start: np.ndarray,
    psf_model: PsfStamps,
    half: int,
    others: np.ndarray | None = None,
    prior: tuple[np.ndarray, np.ndarray] | None = None,
    local_sky: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float] | None:
    """Fluxes (electrons), their standard deviations, positions, theirs, and misfit of a group.

    The misfit is the reduced chi-square with :data:`PROFILE_ERROR` of the model added to each
    pixel's variance (whether the fit found point sources); the flux errors are widened by the
    plain reduced chi-square when it exceeds 1.

    Weighted least squares with the variance of the model (sky + stars), not of the data, so
    that low counts do not pull fluxes down. Stars at S/N >= :data:`POSITION_SNR` also move
    (two Gauss-Newton steps on flux and position, at most half a pixel); the flux variance is
    that of the joint fit, so it includes the position uncertainty. The positions' standard
    deviations (``n 2``, row and column) are the joint fit's too, widened like the fluxes'; inf
    for the stars that did not move. ``others`` is the light of
    the stars outside the group on the group's :func:`_region`, subtracted from the data.
    ``prior``: a Gaussian prior on each star's flux, ``(mean, sigma)`` in electrons (sigma inf:
    none); position steps then get one of :data:`SHIFT_PRIOR_PX`. None if the fit fails.
    """
    n = len(positions)
    rows, cols = _region(positions, data.shape, half)
    top, left = rows.start, cols.start
    region = (rows.stop - top, cols.stop - left)
    pixels = data[rows, cols] if others is None else data[rows, cols] - others
    # the pixels' variance counts the light of the stars outside the group too (a crowd's)
    sky = background[rows, cols] + (0 if others is None else np.clip(others, 0, None))
    fluxes = np.clip(start, 0, None)
    positions = positions.copy()
    moving = np.zeros(n, dtype=bool)
    n_sky = int(local_sky)
    psf = None
    for iteration in range(3):
        design = _design(positions, top, left, region, psf_model, half, moving, psf)
        if design is None:
            return None
        psf, d_row, d_col = design
        use = (psf.sum(0) > 0) & np.isfinite(pixels)
        columns = [psf[:, use], np.ones((n_sky, int(use.sum())))]  # stars, then a local sky
        if moving.any():
            columns += [d_row[:, use], d_col[:, use]]
        matrix = np.concatenate(columns).T
        if use.sum() <= matrix.shape[1]:
            return None
        values = pixels[use]
        # variance from the model, not the data: no bias towards low counts
        weight = 1 / np.clip(sky[use] + psf[:, use].T @ np.clip(fluxes, 0, None), 1e-3, None)
        normal = matrix.T @ (matrix * weight[:, None])
        target = matrix.T @ (values * weight)
        if prior is not None:
            precision = np.zeros(matrix.shape[1])
            precision[:n] = 1 / prior[1] ** 2
            shift_sigma = SHIFT_PRIOR_PX * np.clip(fluxes[moving], 1e-6, None)
            precision[n + n_sky :] = np.tile(1 / shift_sigma**2, 2)
            normal[np.diag_indices_from(normal)] += precision
            target[:n] += prior[0] * precision[:n]
        try:
            covariance = np.linalg.inv(normal)
        except np.linalg.LinAlgError:
            return None
        solution = covariance @ target
        if not np.all(np.isfinite(solution)):
            return None
        fluxes = solution[:n]
        if moving.any():
            m = int(moving.sum())
            safe = np.clip(fluxes[moving], 1e-6, None)
            steps = solution[n + n_sky :]
            shift = np.stack([steps[:m], steps[m:]], -1) / safe[:, None]
            positions[moving] += np.clip(shift, -0.5, 0.5)
        sigma = np.sqrt(np.clip(np.diag(covariance)[:n], 0, None))
        if iteration == 0:
            moving = fluxes >= POSITION_SNR * sigma
            if not moving.any():
                break
    residual = values - matrix @ solution
    dof = max(len(values) - matrix.shape[1], 1)
    reduced_chi2 = float((residual**2 * weight).sum()) / dof
    widen = math.sqrt(max(reduced_chi2, 1.0))
    sigma = sigma * widen
    sigma = np.sqrt(sigma**2 + (FLUX_FLOOR * np.clip(fluxes, 0, None)) ** 2)
    position_sigma = np.full((n, 2), np.inf)
    if moving.any():
        m = int(moving.sum())
        step_sigma = np.sqrt(np.clip(np.diag(covariance)[n + n_sky :], 0, None))
        # a step is flux times shift: at S/N >= POSITION_SNR the flux's error is a small part
        safe = np.clip(fluxes[moving], 1e-6, None)[:, None]
        position_sigma[moving] = widen * np.stack([step_sigma[:m], step_sigma[m:]], -1) / safe
    # a survey's PSF model is not refitted to this image: its percent-level errors are allowed
    profile_error = PROFILE_ERROR if isinstance(psf_model, ImagePsf) else 0.0
    stars_light = psf[:, use].T @ np.clip(fluxes, 0, None)
    tolerant = 1 / (1 / weight + (profile_error * stars_light) ** 2)
    misfit = float((residual**2 * tolerant).sum()) / dof
    return fluxes, sigma, positions, position_sigma, misfit


def _aperture_correction(
    data: np.ndarray,
    positions: np.ndarray,
    fluxes: np.ndarray,
    sigma: np.ndarray,
    detections: np.ndarray,
    radius_px: float,
    model_rejected: bool,
    local_sky: bool = True,
) -> tuple[float, float] | None:
    """Median ratio of large-aperture to PSF-fit flux of bright, isolated stars, and its error.

    A PSF model that misses part of the real PSF's wings (a Moffat fitted to a Kolmogorov
    core, say) scales every PSF-fit flux by the same factor; the light in a large aperture does
    not depend on the model. As DAOPHOT users do, the fluxes are put back on the aperture's
    scale. None when fewer than :data:`MIN_APERTURE_STARS` stars qualify or the field is crowded
    (:data:`MAX_CROWDED_APERTURES`; the PSF model is then trusted as it is), or when the
    nominal PSF was not rejected (``model_rejected`` False) and the correction is consistent
    with 1. ``local_sky`` False measures the aperture on ``data`` as it is (its sky already
    subtracted), as SDSS PHOTO's aperture fluxes are.
    """
    import sep

    if not len(positions):
        return None
    bright = (fluxes > APERTURE_SNR * sigma) & np.isfinite(sigma)
    # another detection inside the aperture or its sky annulus would bias the ratio
    tree = cKDTree(detections)
    crowded = np.array([len(tree.query_ball_point(p, radius_px + 3)) > 1 for p in positions])
    if crowded.mean() > MAX_CROWDED_APERTURES:
        return None
    bright &= ~crowded
    if bright.sum() < MIN_APERTURE_STARS:
        return None
    rows, cols = positions[bright].T
    filled = np.ascontiguousarray(np.nan_to_num(data, nan=0.0), dtype=np.float64)
    mask = np.ascontiguousarray(~np.isfinite(data))
    # a local sky from an annulus takes out what the global background left
    flux, _, flags = sep.sum_circle(
        filled,
        cols - 0.5,
        rows - 0.5,
        radius_px,
        mask=mask,
        bkgann=(radius_px + 1, radius_px + 4) if local_sky else None,
        subpix=5,
    )
    good = (flags == 0) & (flux > 0)
    if good.sum() < MIN_APERTURE_STARS:
        return None
    ratios = flux[good] / fluxes[bright][good]
    factor = float(np.median(ratios))
    spread = 1.4826 * float(np.median(np.abs(ratios - factor)))
    error = 1.2533 * spread / math.sqrt(good.sum()) / factor
    # the nominal PSF survived the shape test: a correction consistent with 1 would only add
    # its own noise, so it is applied only when the apertures reject the model too
    if not model_rejected and abs(factor - 1) < APERTURE_SIGNIFICANCE * error:
        return None
    return factor, error


def _render(
    positions: np.ndarray,
    fluxes: np.ndarray,
    psf: PsfStamps,
    image_shape: tuple[int, int],
    half: int,
    origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Stars as PSFs (electrons) on an image whose first pixel is the full image's ``origin``.

    Shape: ``h w`` (``image_shape``).
    """
    out = np.zeros(image_shape)
    for (row, col), flux in zip(positions, np.clip(fluxes, 0, None), strict=True):
        cut = stamp_slices(row - origin[0], col - origin[1], image_shape, half)
        if cut is None or flux == 0:
            continue
        rows, cols, s_rows, s_cols, offset_row, offset_col = cut
        stamp = psf.stamp(row, col, offset_row, offset_col, half)
        out[rows, cols] += flux * stamp[s_rows, s_cols]
    return out


def near(
    positions: np.ndarray, image_shape: tuple[int, int], radius: float | np.ndarray
) -> np.ndarray:
    """Pixels whose centre lies within ``radius`` (one, or one per position) of any position.

    Shape ``h w``.
    """
    mask = np.zeros(image_shape, dtype=bool)
    radii = np.broadcast_to(np.asarray(radius, dtype=float), (len(positions),))
    # a small box each: the cost grows with sources, not pixels
    for (row, col), reach in zip(positions, radii, strict=True):
        top, left = max(int(row - reach), 0), max(int(col - reach), 0)
        bottom = min(int(row + reach) + 1, image_shape[0])
        right = min(int(col + reach) + 1, image_shape[1])
        if top >= bottom or left >= right:
            continue
        rows, cols = np.mgrid[top:bottom, left:right] + 0.5
        mask[top:bottom, left:right] |= (rows - row) ** 2 + (cols - col) ** 2 <= reach**2
    return mask


def network_sigma(
    catalog: FullCatalog, quantiles: Sequence[float], key: str = "fluxes"
) -> np.ndarray | None:
    """The posterior width of ``key`` (default: fluxes) as a Gaussian sigma; None without one.

    From the widest central pair of ``quantiles`` the catalog holds. Shape: ``n d`` (every
    slot of the catalog's one image).
    """
    lows = sorted(q for q in quantiles if q < 0.5 and f"{key}@{1 - q:g}" in catalog)
    if not lows:
        return None
    low = lows[0]
    width = catalog[f"{key}@{1 - low:g}"][0] - catalog[f"{key}@{low:g}"][0]
    return width.numpy() / (2 * float(ndtri(1 - low)))


def flux_per_electron(image: SurveyImage, band: int) -> float:
    """A catalog flux (nanomaggies) per electron of the band's PSF-model star.

    The fluxes carry the image's aperture correction; its PSF model does not.
    """
    per_electron = 10 ** (-0.4 * (float(image.magzero[band]) - 22.5))
    if image.psf is not None and image.aperture_correction is not None:
        return per_electron * float(image.aperture_correction[band])
    return per_electron


def nominal_psf_models(
    image: SurveyImage, pixel_scale_arcsec: float, beta: float, cell_px: float = 4.0
) -> list[PsfStamps]:
    """Each band's PSF where no star is fitted: the image's own model, else its header Moffat.

    ``cell_px``: the image's own model is evaluated once per cell of this side
    (:class:`~bliss.predict.psf_model.ImagePsf`).
    """
    if image.psf is not None:
        return [
            ImagePsf(functools.partial(image.psf, band), cell_px=cell_px)
            for band in range(len(image.bands))
        ]
    fwhm = np.asarray(image.psf_fwhm_arcsec, dtype=np.float64) / pixel_scale_arcsec
    return [MoffatShape(float(width), beta, fitted=False) for width in fwhm]


def refine_star_fluxes(
    image: SurveyImage,
    catalog: FullCatalog,
    quantiles: Sequence[float],
    pixel_scale_arcsec: float,
    default_beta: float = 3.5,
    half: int = STAMP_HALF_PX,
    reference_band: int = 0,
) -> tuple[FullCatalog, list[PsfStamps]]:
    """Replace star fluxes, and bright stars' positions, by PSF-fit ones where they are narrower.

    Args:
        image: the image the catalog came from (electrons, sky included).
        catalog: the predictor's one-image catalog, fluxes in the image's nanomaggies, with
            ``prob_galaxy`` and ``fluxes@<q>`` for ``quantiles``.
        quantiles: the flux quantiles in the catalog, recomputed as Gaussian ones where the fit
            is kept.
        pixel_scale_arcsec: the image's pixel side (turns the header FWHM into pixels).
        default_beta: Moffat beta when a band has too few stars to fit its PSF shape.
        half: stamp half-width, pixels.
        reference_band: index of the band the catalog's positions refer to (the encoder's
            reference band): its fits give the stars' positions.

    Returns:
        The catalog with refined ``fluxes`` and ``fluxes@<q>``, and ``plocs`` and ``plocs@<q>``
        for the stars whose fitted positions are kept (other keys unchanged), and the
        PSF model of each band (a fitted or nominal :class:`MoffatShape`, or the image's
        :class:`ImagePsf`; :func:`nominal_psf_models` where no star is fitted).

    Shapes:
        catalog keys ``1 n d``.
    """
    n = int(catalog["n_sources"][0])
    nominal = nominal_psf_models(image, pixel_scale_arcsec, default_beta)
    if n == 0:
        return catalog, nominal
    positions = catalog["plocs"][0, :n].double().numpy()
    # a model without a galaxy factor (the crowded-field one) catalogs only stars
    prob_galaxy = (
        catalog["prob_galaxy"][0, :n, 0].numpy() if "prob_galaxy" in catalog else np.zeros(n)
    )
    galaxy = prob_galaxy >= 0.5
    fluxes = catalog["fluxes"][0, :n].double().numpy().copy()
    sigma_net = network_sigma(catalog, quantiles)
    if sigma_net is None:
        return catalog, nominal
    sigma_net = sigma_net[:n]
    retyped = _point_like_galaxies(
        image,
        positions,
        galaxy,
        fluxes[:, reference_band],
        nominal[reference_band],
        reference_band,
        half,
    )
    if retyped.any():
        galaxy = galaxy & ~retyped
        prob_galaxy = np.where(retyped, 0.0, prob_galaxy)
        data = dict(catalog.items())
        data["prob_galaxy"] = padded(catalog["prob_galaxy"], prob_galaxy[:, None])
        catalog = FullCatalog(catalog.height_px, catalog.width_px, data)
    tree = cKDTree(positions)
    # a galaxy's light is not a PSF: stars with one inside their stamp keep the network's flux
    near_galaxy = np.array(
        [
            any(galaxy[j] for j in tree.query_ball_point(p, half) if j != i)
            for i, p in enumerate(positions)
        ]
    )
    stars = np.flatnonzero(~galaxy & ~near_galaxy)
    if not len(stars):
        return catalog, nominal
    shapes: list[PsfStamps] = []
    isolated = np.array(
        [len(tree.query_ball_point(positions[i], 2 * half)) == 1 for i in stars], dtype=bool
    )
    new_fluxes, new_sigma = fluxes.copy(), np.full_like(fluxes, np.inf)
    fitted_position, position_sigma = np.zeros((n, 2)), np.full((n, 2), np.inf)
    misfit = np.full_like(fluxes, np.inf)
    in_block = np.zeros(n, dtype=bool)
    galaxy_mask = near(positions[galaxy], image.images.shape[1:], GALAXY_MASK_PX)
    fit_sets = []
    for members, kept, block in _fit_sets(positions[stars], 2 * half + 1):
        fit_sets.append((stars[members], stars[kept], block))
        in_block[stars[kept]] = block
    for band in range(len(image.bands)):
        per_electron = 10 ** (-0.4 * (float(image.magzero[band]) - 22.5))
        subtracted = image.images[band] - image.background[band]
        data = subtracted
        fwhm_px = float(image.psf_fwhm_arcsec[band]) / pixel_scale_arcsec
        # the catalog's fluxes carry the image's aperture correction, the fits are on the scale
        # of its PSF model: divided out of their starting values
        scale = 1.0
        if image.psf is not None and image.aperture_correction is not None:
            scale = float(image.aperture_correction[band])
        model = nominal[band]  # the image's own model where it has one
        if image.psf is None:
            model = _fitted_moffat(
                image,
                band,
                data,
                positions,
                fluxes[:, band] / per_electron,
                stars[isolated],
                fwhm_px,
                default_beta,
                half,
            )
        shapes.append(model)
        # galaxies are not PSFs: their cores are left out of every star's fit
        data = np.where(galaxy_mask, np.nan, data)
        band_fluxes = fluxes[:, band] / per_electron / scale
        prior_mean = band_fluxes.copy()
        prior_sigma = np.maximum(
            sigma_net[:, band] / per_electron / scale * PRIOR_WIDEN, np.abs(prior_mean)
        )
        prior_sigma = np.where(prior_sigma > 0, prior_sigma, np.inf)
        star_positions = positions.copy()
        # two passes: the second fits each group with the wings of every other star removed
        for _ in range(2):
            # ``others`` is the pass's drawing less the members' stamps as drawn (blocks fitted
            # earlier in the pass may have moved their margins' stars since); it keeps the
            # members' own wings beyond the stamps, which would otherwise be misfit
            drawn_fluxes, drawn_positions = band_fluxes.copy(), star_positions.copy()
            wings = _render(
                drawn_positions[stars], drawn_fluxes[stars], model, data.shape, 2 * half
            )
            for members, kept, block in fit_sets:
                rows, cols = _region(positions[members], data.shape, half)
                own = _render(
                    drawn_positions[members],
                    drawn_fluxes[members],
                    model,
                    (rows.stop - rows.start, cols.stop - cols.start),
                    half,
                    origin=(rows.start, cols.start),
                )
                fit = _fit_group(
                    data,
                    image.background[band],
                    positions[members],
                    band_fluxes[members],
                    model,
                    half,
                    others=wings[rows, cols] - own,
                    prior=(prior_mean[members], prior_sigma[members]),
                    # a block's sky term would take up its margin's misfit and spread it over
                    # the stars inside (the passes then converge slowly, fluxes low); the
                    # image's background is its sky
                    local_sky=not block,
                )
                if fit is None:
                    continue
                own = np.isin(members, kept)
                kept = members[own]
                new_fluxes[kept, band] = fit[0][own] * per_electron
                new_sigma[kept, band] = fit[1][own] * per_electron
                misfit[kept, band] = fit[4]
                band_fluxes[kept] = fit[0][own]
                star_positions[kept] = fit[2][own]
                if band == reference_band:
                    fitted_position[kept], position_sigma[kept] = fit[2][own], fit[3][own]
        if isinstance(model, ImagePsf):
            model.clear_cache()  # five bands' PSFs at every star would add ~150 MB to the peak
            # the image's aperture correction was measured with another fit of the same model
            # (no local sky term: with one, a halo's flat wings go into the sky); these fits
            # get their own, measured the same way on the same aperture, where enough stars allow
            own = _aperture_correction(
                subtracted,
                star_positions[stars],
                band_fluxes[stars],
                new_sigma[stars, band] / per_electron,
                positions,
                TOTAL_APERTURE_ARCSEC / pixel_scale_arcsec,
                model_rejected=True,
                local_sky=False,
            )
            factor, error = own if own is not None else (scale, 0.0)
            fitted = np.isfinite(new_sigma[:, band])
            new_fluxes[fitted, band] *= factor
            new_sigma[fitted, band] = np.hypot(
                new_sigma[fitted, band] * factor, error * new_fluxes[fitted, band]
            )
            continue
        correction = _aperture_correction(
            subtracted,
            star_positions[stars],
            band_fluxes[stars],
            new_sigma[stars, band] / per_electron,
            positions,
            APERTURE_FWHM * fwhm_px,
            model_rejected=model.fitted,
        )
        if correction is not None:
            factor, error = correction
            new_sigma[:, band] = np.hypot(new_sigma[:, band] * factor, error * new_fluxes[:, band])
            new_fluxes[:, band] *= factor
    # the network's posterior is only as good as its training PSF and prior: a star measured at
    # S/N >= FIT_SNR by the fit takes the fit's (unbiased for any PSF the image's stars define)
    fitted_well = np.isfinite(new_sigma) & (new_fluxes >= FIT_SNR * new_sigma)
    # a source the PSF does not describe (an extended galaxy called a star) keeps the network's
    point_like = misfit < POINT_CHI2
    # a block of a crowded tangle fits hundreds of stars beside the faint ones no catalog holds:
    # its misfit says nothing of one source, and the network's fluxes there are the prior of its
    # fit, so the fit (posterior given the network's and the pixels') is kept wherever it ran
    block_fit = in_block[:, None] & np.isfinite(new_sigma)
    # ... and a source the network nearly called a galaxy keeps its posterior (STAR_PROB)
    survey_psf = np.array([isinstance(model, ImagePsf) for model in shapes])
    sure_point = (new_fluxes >= SURE_POINT_SNR * new_sigma) & survey_psf[None, :]
    star_like = (prob_galaxy < STAR_PROB)[:, None] | sure_point
    keep = ((fitted_well | (new_sigma < sigma_net)) & point_like & star_like) | block_fit
    data = dict(catalog.items())
    _replace(data, "fluxes", catalog, quantiles, keep, new_fluxes, new_sigma)
    data[LOCAL_SKY_KEY] = padded(catalog["fluxes"], keep & ~in_block[:, None])
    # a star takes its reference-band fit's position where that fit's flux is kept: the other
    # bands' positions differ from it by their WCS registration (~0.1 px on SDSS frames) and by
    # differential chromatic refraction, which varies with each star's colour. Not in a block
    # of a crowded tangle: the stars below its detection limit pull the fitted positions, whose
    # errors know only the catalog's stars (on crowded_stars their coverage fell to 0.79-0.81)
    sigma_net_position = network_sigma(catalog, quantiles, "plocs")
    narrower = sigma_net_position is not None and (position_sigma < sigma_net_position[:n]).all(-1)
    take = np.isfinite(position_sigma).all(-1) & keep[:, reference_band] & ~in_block & narrower
    take = np.repeat(take[:, None], 2, -1)
    _replace(data, "plocs", catalog, quantiles, take, fitted_position, position_sigma)
    return FullCatalog(catalog.height_px, catalog.width_px, data), shapes


def _point_like_galaxies(
    image: SurveyImage,
    positions: np.ndarray,
    galaxy: np.ndarray,
    reference_fluxes: np.ndarray,
    model: PsfStamps,
    band: int,
    half: int,
) -> np.ndarray:
    """Which of the sources called galaxies a PSF fit explains at S/N >= :data:`SURE_POINT_SNR`.

    Those are stars (misfit below :data:`POINT_CHI2`): the network's P(galaxy) of bright real
    stars is unsure (on SDSS 94-1-12 a r = 14.4 star got 0.62, and its galaxy flux was 0.49 mag
    faint). Only with the image's own PSF model (a Moffat fitted to the image's stars cannot tell a
    compact galaxy from a star at that precision). Each candidate is fitted in the reference
    band with the star-typed sources within ``half`` pixels of it (positions free at this S/N)
    and a local sky, the cores of the other galaxies left out; not where its stamp is cut by
    the image's edge or its own core has missing pixels. ``reference_fluxes``: nanomaggies;
    ``model``: the band's PSF. Shape ``n`` (bool).
    """
    retyped = np.zeros(len(positions), dtype=bool)
    if not isinstance(model, ImagePsf):
        return retyped
    electrons = np.clip(reference_fluxes / flux_per_electron(image, band), 0, None)
    # a Poisson S/N is at most the root of the counts: fainter sources cannot qualify
    candidates = np.flatnonzero(galaxy & (electrons >= SURE_POINT_SNR**2))
    if not len(candidates):
        return retyped
    subtracted = image.images[band] - image.background[band]
    shape = subtracted.shape
    masked = np.where(near(positions[galaxy], shape, GALAXY_MASK_PX), np.nan, subtracted)
    tree = cKDTree(positions)
    for target in candidates:
        rows, cols = _region(positions[[target]], shape, half)
        if rows.stop - rows.start < 2 * half + 1 or cols.stop - cols.start < 2 * half + 1:
            continue  # cut by the image's edge: the fit would extrapolate the missing light
        own = near(positions[[target]], shape, GALAXY_MASK_PX)
        if not np.isfinite(subtracted[own]).all():
            continue  # a core with missing pixels (masked or saturated)
        stars = tree.query_ball_point(positions[target], half)
        members = [target] + [j for j in stars if not galaxy[j]]
        others = [j for j in tree.query_ball_point(positions[target], 2 * half) if galaxy[j]]
        others.remove(target)
        if others:
            own &= ~near(positions[others], shape, GALAXY_MASK_PX)
        data = np.where(own, subtracted, masked)
        fit = _fit_group(
            data, image.background[band], positions[members], electrons[members], model, half
        )
        if fit is None:
            continue
        flux, sigma, _, _, misfit = fit
        retyped[target] = flux[0] >= SURE_POINT_SNR * sigma[0] and misfit < POINT_CHI2
    return retyped


def _replace(
    data: dict,
    key: str,
    catalog: FullCatalog,
    quantiles: Sequence[float],
    take: np.ndarray,
    value: np.ndarray,
    sigma: np.ndarray,
) -> None:
    """Put ``value`` (``n d``) into ``data[key]`` where ``take``, with Gaussian quantiles."""
    n = len(value)
    old = catalog[key][0, :n].double().numpy()
    data[key] = padded(catalog[key], np.where(take, value, old))
    for q in quantiles:
        end = f"{key}@{q:g}"
        if end in catalog:
            gaussian = value + float(ndtri(q)) * np.where(take, sigma, 0)
            old = catalog[end][0, :n].double().numpy()
            data[end] = padded(catalog[end], np.where(take, gaussian, old))


def _fitted_moffat(
    image: SurveyImage,
    band: int,
    data: np.ndarray,
    positions: np.ndarray,
    start: np.ndarray,
    isolated_stars: np.ndarray,
    fwhm_px: float,
    default_beta: float,
    half: int,
) -> MoffatShape:
    """The Moffat of one band, fitted to its brightest isolated stars (or the nominal one)."""
    variance = np.clip(image.background[band], 1e-3, None) + np.clip(data, 0, None)
    bright = isolated_stars[np.argsort(-start[isolated_stars])][:MAX_SHAPE_STARS]
    # centre the shape stars with the nominal PSF first: the network's positions are off by
    # ~0.1 px, which a PSF fit on fixed positions would read as a broader PSF
    nominal = MoffatShape(fwhm_px, default_beta, fitted=False)
    centred = []
    for index in bright:
        one = _fit_group(
            data, image.background[band], positions[[index]], start[[index]], nominal, half
        )
        centred.append(positions[index] if one is None else one[2][0])
    centred = np.array(centred).reshape(-1, 2)
    return fit_moffat_shape(data, variance, centred, fwhm_px, default_beta, half)


def padded(template: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    """``template`` (``1 n_max d``) with its first ``len(values)`` rows replaced by ``values``."""
    out = template.clone()
    out[0, : len(values)] = torch.as_tensor(values, dtype=template.dtype)
    return out
