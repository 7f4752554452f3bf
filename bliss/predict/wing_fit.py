"""One star fitted on the usable pixels around it, beside its neighbours, and how far to trust it.

The machinery of :mod:`bliss.predict.saturated_stars`: :func:`fit_band` fits a star's flux (and,
in the reference band, searches its position) on the pixels a saturation mask leaves, with a
local sky, the detections near it fitted jointly and those further out in turn;
:class:`WingCorrection` measures, on the image's own unsaturated stars with their cores cut out,
how a fit on the wings alone compares with a fit of the whole star (a survey PSF model's wings
are off by percents, which a fit on the wings alone multiplies).
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize
from scipy.spatial import cKDTree

from bliss.predict.psf_model import STAMP_HALF_PX, stamp_slices
from bliss.predict.psf_photometry import PsfStamps

__all__ = [
    "BandFit",
    "WingCorrection",
    "fit_band",
    "fit_half_px",
    "fit_whole_star",
    "log_odds",
    "stamp_on",
    "swamped",
    "wing_correction",
]

#: the star's fit uses usable pixels within ``MIN_HALF_PX + CORE_RADII * r`` (``r``: the radius
#: of its saturated core), at most ``MAX_HALF_PX`` (an SDSS psField PSF is 51 px across)
MIN_HALF_PX = 10
CORE_RADII = 3.0
MAX_HALF_PX = 25
#: saturated pixels' neighbours within this are unusable too (charge spills, non-linearity), px
DILATE_PX = 1
#: the position search around the thickest point: a coarse grid over this many pixels each way,
#: then a fine one around its best point
SEARCH_PX = 2.0
SEARCH_STEPS_PX = (0.5, 0.125, 0.03125)
#: the PSF model's error per pixel, counted in each pixel's variance: this fraction of the star's
#: light there ...
PROFILE_ERROR = 0.03
#: ... and this fraction of its total flux: an SDSS psField PSF is noise beyond ~10 px (its pixels
#: at 12-20 px scatter by 2-5e-5 about zero, a quarter to a half of them negative), where a
#: saturated star's wings still shine
PSF_NOISE = 5e-5
#: wing fits are calibrated on the image's own unsaturated stars with their cores cut out to
#: these radii (:class:`WingCorrection`), pixels ...
CALIBRATION_RADII_PX = (1.5, 2.5, 3.5, 5.0, 7.0)
#: ... the brightest this many isolated point sources of each band, at least the minimum
CALIBRATION_STARS = 20
MIN_CALIBRATION_STARS = 5
#: a calibration star has no detection within this many pixels brighter than this share of it
ISOLATION_PX = 8.0
ISOLATION_SHARE = 0.05
#: a calibration star's fits model the brightest this many detections of its fit region
CALIBRATION_NEIGHBOURS = 60
#: star fit, then neighbours' fluxes: this many times
OUTER_PASSES = 2
#: a neighbour fitted with the star has its network flux as prior mean and width, at least this
#: many electrons wide
PRIOR_FLOOR_E = 100.0
#: reweighted least-squares iterations of a fit (weights from its model)
FIT_ITERATIONS = 4


@dataclass(frozen=True)
class WingCorrection:
    """How wing fits compare with whole-star fits on an image's own unsaturated stars, one band.

    A survey PSF model is fitted to the cores of stars; its wings can be off by several percent
    (on SDSS frames the psField PSF with the shipped models' halo made cut stars' wing fits
    2-25 % faint for cores of radius 1.5-5 px). Cutting the image's own bright stars' cores to
    several radii measures that, as the share of the PSF's light lost grows; a saturated star
    with the same share lost is corrected by the median of the stars' ratios there, with their
    spread as its error.

    Attributes:
        log_odds: ``log(lost / (1 - lost))`` of each star at each cut (the first: none). Shape
            ``s r``.
        log_ratio: ``ln(wing flux / whole flux)`` there (the first: 0). Shape ``s r``.
    """

    log_odds: np.ndarray
    log_ratio: np.ndarray

    def __call__(self, lost: float) -> tuple[float, float]:
        """The factor a wing fit with ``lost`` is divided by, and its fractional error."""
        x = log_odds(lost)
        at = np.array(
            [
                np.interp(x, odds, ratio)
                for odds, ratio in zip(self.log_odds, self.log_ratio, strict=True)
            ]
        )
        middle = float(np.median(at))
        spread = float(np.percentile(np.abs(at - middle), 68.27))  # a robust sigma, tails heavier
        if x > float(np.median(self.log_odds[:, -1])):  # beyond the largest cut: extrapolated
            spread = math.hypot(spread, middle)
        return math.exp(middle), spread


def fit_half_px(core_radius: float) -> int:
    """Half side of a star's fit region when a core of this radius (pixels) is unusable.

    Wings out to several core radii, within the PSF model: ``MIN_HALF_PX + CORE_RADII * r``,
    at most ``MAX_HALF_PX``.
    """
    half = math.ceil(CORE_RADII * core_radius) + MIN_HALF_PX
    return int(np.clip(half, MIN_HALF_PX, MAX_HALF_PX))


def log_odds(lost: np.ndarray | float) -> np.ndarray:
    """``log(lost / (1 - lost))``, with ``lost`` kept within [0.001, 0.999]."""
    share = np.clip(np.asarray(lost, dtype=np.float64), 1e-3, 1 - 1e-3)
    return np.log(share / (1 - share))


def wing_correction(
    data: np.ndarray,
    background: np.ndarray,
    saturated: np.ndarray,
    psf: PsfStamps,
    positions: np.ndarray,
    fluxes: np.ndarray,
) -> WingCorrection | None:
    """Calibrate one band's wing fits on the brightest isolated unsaturated stars of a catalog.

    ``data``, ``background``, ``saturated``: the band (sky-subtracted electrons, sky, saturated
    pixels; ``h w``); ``positions`` (``n 2``) and ``fluxes`` (``n``, electrons) the catalog's
    point sources. None with fewer than :data:`MIN_CALIBRATION_STARS` usable stars.
    """
    height, width = data.shape
    margin = MAX_HALF_PX + 2
    inside = (
        (positions[:, 0] >= margin)
        & (positions[:, 0] < height - margin)
        & (positions[:, 1] >= margin)
        & (positions[:, 1] < width - margin)
        & (fluxes > 0)
    )
    if not inside.any():
        return None
    tree = cKDTree(positions)
    rows, cols = np.nonzero(saturated)
    near_saturated = (
        cKDTree(np.stack([rows, cols], -1) + 0.5).query(positions)[0] < margin
        if len(rows)
        else np.zeros(len(positions), dtype=bool)
    )
    chosen = []
    for index in np.flatnonzero(inside & ~near_saturated)[
        np.argsort(-fluxes[inside & ~near_saturated])
    ]:
        close = [j for j in tree.query_ball_point(positions[index], ISOLATION_PX) if j != index]
        if any(fluxes[j] > ISOLATION_SHARE * fluxes[index] for j in close):
            continue
        chosen.append(index)
        if len(chosen) == CALIBRATION_STARS:
            break
    # the band's mask with one calibration star's core cut at a time, restored after each fit
    cut = np.array(saturated, dtype=bool)
    star_odds, star_ratios = [], []
    for index in chosen:
        # the catalog's other sources in the fit region, whose light a local sky would take up
        around = np.array(tree.query_ball_point(positions[index], MAX_HALF_PX * math.sqrt(2)), int)
        around = around[around != index]
        around = around[(np.abs(positions[around] - positions[index]) <= MAX_HALF_PX).all(-1)]
        around = around[np.argsort(-fluxes[around])[:CALIBRATION_NEIGHBOURS]]
        whole = fit_band(
            data,
            background,
            saturated,
            psf,
            positions[index],
            MIN_HALF_PX,
            positions[around],
            fluxes[around],
            True,
        )
        if whole is None:
            continue
        centre = whole.position
        odds, ratios = [log_odds(whole.lost)], [0.0]
        for radius in CALIBRATION_RADII_PX:
            reach = int(math.ceil(radius)) + 1
            r0, c0 = int(centre[0]) - reach, int(centre[1]) - reach
            grid = np.mgrid[r0 : r0 + 2 * reach + 1, c0 : c0 + 2 * reach + 1] + 0.5
            disk = (grid[0] - centre[0]) ** 2 + (grid[1] - centre[1]) ** 2 <= radius**2
            rows, cols = slice(r0, r0 + 2 * reach + 1), slice(c0, c0 + 2 * reach + 1)
            cut[rows, cols] |= disk
            half = fit_half_px(radius)
            wing = fit_band(
                data,
                background,
                cut,
                psf,
                centre,
                half,
                positions[around],
                fluxes[around],
                False,
            )
            cut[rows, cols] = saturated[rows, cols]
            if wing is None:
                break
            odds.append(log_odds(wing.lost))
            ratios.append(math.log(wing.flux / whole.flux))
        if len(odds) == len(CALIBRATION_RADII_PX) + 1 and np.all(np.diff(odds) > 0):
            star_odds.append(odds)
            star_ratios.append(ratios)
    if len(star_odds) < MIN_CALIBRATION_STARS:
        return None
    return WingCorrection(np.array(star_odds), np.array(star_ratios))


def fit_whole_star(
    data: np.ndarray,
    background: np.ndarray,
    saturated: np.ndarray,
    psf: PsfStamps,
    position: np.ndarray,
) -> "BandFit | None":
    """One isolated star fitted on every usable pixel around ``position`` (position searched).

    Without neighbours (:func:`wing_correction` passes the catalog's to :func:`fit_band`). ``data``, ``background`` and
    ``saturated``: the band (sky-subtracted electrons, sky, saturated pixels; ``h w``). Its
    ``flux`` (electrons) and ``lost`` (share of the PSF's light on unusable pixels) are what a
    caller needs; None if the fit fails.
    """
    return fit_band(
        data, background, saturated, psf, position, MIN_HALF_PX, _NONE, _NONE[:, 0], True
    )


#: no neighbours (``0 2`` positions)
_NONE = np.zeros((0, 2))


def stamp_on(
    psf: PsfStamps, position: np.ndarray, region: tuple[slice, slice], half: int
) -> np.ndarray:
    """The PSF of a star at ``position`` on ``region`` of the image (zero beyond its stamp)."""
    top, left = region[0].start, region[1].start
    shape = (region[0].stop - top, region[1].stop - left)
    out = np.zeros(shape)
    cut = stamp_slices(position[0] - top, position[1] - left, shape, half)
    if cut is not None:
        rows, cols, s_rows, s_cols, offset_row, offset_col = cut
        stamp = psf.stamp(position[0], position[1], offset_row, offset_col, half)
        # a survey PSF model's noisy outer pixels go below zero; light does not
        out[rows, cols] = np.clip(stamp[s_rows, s_cols], 0, None)
    return out


@dataclass
class BandFit:
    """One band's fit of a star (:func:`fit_band`); fluxes in electrons, positions in pixels."""

    flux: float
    sigma: float
    position: np.ndarray
    position_sigma: np.ndarray
    lost: float  # share of the star's PSF light on unusable pixels
    neighbour_snr: np.ndarray
    reduced_chi2: float
    star_light: np.ndarray  # the fitted star on the fit region, electrons
    sky: np.ndarray  # the image's sky there
    top_left: np.ndarray  # the region's first pixel

    def hidden_light(self, fluxes: np.ndarray) -> tuple[float, float]:
        """The light of sources under the star's swamped wings, and its standard deviation.

        A fit cannot tell the star's wings from the faint sources where its PSF error swamps the
        photon noise: their light goes into its flux. ``fluxes`` (electrons) are the catalog's
        sources in the rest of the fit region; as many per pixel under the wings, with the same
        fluxes (a compound Poisson sum), is what the star took.
        """
        under = _swamps(self.star_light, self.sky)
        inside, rest = int(under.sum()), int((~under).sum())
        if not rest or not len(fluxes):
            return 0.0, 0.0
        share = inside / rest
        return float(fluxes.sum()) * share, math.sqrt(float((fluxes**2).sum()) * share)

    def swamped(self, plocs: np.ndarray) -> np.ndarray:
        """Which of ``plocs`` (``n 2``) sit where the star's PSF error swamps the photon noise."""
        return swamped(plocs, self.star_light, self.sky, self.top_left)


def _model_variance(star_light: np.ndarray, flux: float) -> np.ndarray:
    """The variance the PSF model's error adds where a star of ``flux`` puts ``star_light``."""
    return (PROFILE_ERROR * star_light) ** 2 + (PSF_NOISE * flux) ** 2


def swamped(
    plocs: np.ndarray, star_light: np.ndarray, sky: np.ndarray, top_left: np.ndarray
) -> np.ndarray:
    """Which of ``plocs`` (``n 2``) sit where the star's PSF error exceeds the photon noise.

    There a detection cannot be told from a piece of the wing the PSF model does not describe.
    ``star_light`` and ``sky``: on the fit region, whose first pixel is ``top_left``.
    """
    index = np.floor(plocs - top_left).astype(int)
    inside = ((index >= 0) & (index < np.array(star_light.shape))).all(-1)
    index = np.clip(index, 0, np.array(star_light.shape) - 1)
    at = star_light[index[:, 0], index[:, 1]]
    return inside & _swamps(at, sky[index[:, 0], index[:, 1]])


def _swamps(star_light: np.ndarray, sky: np.ndarray) -> np.ndarray:
    """Where the star's PSF error exceeds the photon noise of its light and the sky.

    The profile error only: ``PSF_NOISE`` is the model's noise where a star's wings are faint,
    and a detection there is a bump the data show, not one the model drew.
    """
    return (PROFILE_ERROR * star_light) ** 2 > sky + star_light


def _usable(saturated: np.ndarray, region: tuple[slice, slice]) -> np.ndarray:
    """Pixels of ``region`` neither saturated nor within :data:`DILATE_PX` of a saturated one."""
    pad = DILATE_PX
    rows = slice(max(region[0].start - pad, 0), region[0].stop + pad)
    cols = slice(max(region[1].start - pad, 0), region[1].stop + pad)
    grow = np.ones((2 * pad + 1, 2 * pad + 1), dtype=bool)
    grown = ndimage.binary_dilation(saturated[rows, cols], grow)
    top, left = region[0].start - rows.start, region[1].start - cols.start
    height, width = region[0].stop - region[0].start, region[1].stop - region[1].start
    return ~grown[top : top + height, left : left + width]


def fit_band(
    data: np.ndarray,
    background: np.ndarray,
    saturated: np.ndarray,
    psf: PsfStamps,
    start: np.ndarray,
    half: int,
    neighbours: np.ndarray,
    neighbour_fluxes: np.ndarray,
    move: bool,
) -> BandFit | None:
    """Fit one band's star around ``start`` (moving if ``move``) beside its neighbours.

    ``data`` and ``background`` are the band's sky-subtracted pixels and sky (electrons, ``h w``),
    ``saturated`` its saturated pixels (they and their neighbours within :data:`DILATE_PX` are
    left out); ``neighbours`` (``m 2``) and ``neighbour_fluxes``
    (electrons) the catalog's other sources in the fit region. Those within ``half / 2`` of the
    star (where a network puts pieces of its wings) are fitted jointly with it; the others' light
    is subtracted, then each one's flux is fitted with the rest subtracted, twice.
    A local sky is fitted too (a cluster's unresolved light); it takes up part of a PSF model's
    flat outer wings as well, which :class:`WingCorrection` measures on the image's own stars.
    """
    height, width = data.shape
    row, col = int(math.floor(start[0])), int(math.floor(start[1]))
    region = (
        slice(max(row - half, 0), min(row + half + 1, height)),
        slice(max(col - half, 0), min(col + half + 1, width)),
    )
    pixels, sky = data[region], np.clip(background[region], 1e-3, None)
    use = _usable(saturated, region) & np.isfinite(pixels)
    if use.sum() <= 2 * (1 + 2 * move):
        return None
    pixels = np.where(use, pixels, 0.0)
    stamps = [stamp_on(psf, p, region, STAMP_HALF_PX) for p in neighbours]
    others = np.stack(stamps) if stamps else np.zeros((0, *pixels.shape))
    inner = np.linalg.norm(neighbours - start, axis=-1) <= half / 2 if len(neighbours) else []
    inner = np.asarray(inner, dtype=bool)
    network = np.clip(np.asarray(neighbour_fluxes, dtype=np.float64), 0, None)
    position = np.asarray(start, dtype=np.float64).copy()
    if move:
        position = _search(pixels, use, sky, psf, position, region, half)
    top_left = np.array([region[0].start, region[1].start])
    # the first pass fits the star alone: the network's detections around a saturated core may
    # be pieces of its wings, and subtracted they would leave the star nothing
    fluxes, snr = np.zeros(len(neighbours)), np.zeros(len(neighbours))
    joined = pieces = started = np.zeros(len(neighbours), dtype=bool)
    result = None
    for _ in range(OUTER_PASSES + 1):
        free = ~inner & ~pieces
        crowd = np.tensordot(np.where(free, fluxes, 0.0), others, 1) if len(fluxes) else 0.0
        args = (pixels - crowd, use, sky + np.clip(crowd, 0, None), psf, position, region, half)
        prior = (network[joined], np.maximum(network[joined], PRIOR_FLOOR_E))
        joint = (others[joined], *prior)
        fit = _fit_star(*args, move, result and result[0], joint)
        if fit is None:
            if result is None:
                return None
            break  # the previous pass's fit stands
        result = fit
        flux, flux_sigma, position, position_sigma, star, reduced_chi2, joint, joint_sigma = fit
        fluxes[joined], snr[joined] = joint, joint / np.maximum(joint_sigma, 1e-30)
        star_light = flux * star
        # detections where the star's PSF error swamps the photon noise are pieces of its wings
        # (zero); the other inner ones are fitted with the star, the outer ones in turn
        pieces = swamped(neighbours, star_light, sky, top_left)
        newly = ~pieces & ~started
        fluxes[newly], started = network[newly], started | newly
        fluxes[pieces], snr[pieces] = 0.0, 0.0
        joined = inner & ~pieces
        model = star_light + np.tensordot(fluxes, others, 1) if len(fluxes) else star_light
        # each outer neighbour in turn with everything else subtracted (a Gauss-Seidel sweep:
        # updated together, overlapping neighbours would each take the same residual light)
        tolerant = sky + np.clip(model, 0, None) + _model_variance(star_light, flux)
        weight = np.where(use, 1 / tolerant, 0.0)
        residual = np.where(use, pixels - model, 0.0)
        for k in np.flatnonzero(~inner & ~pieces):
            information = float((others[k] ** 2 * weight).sum())
            if information <= 0:
                continue
            new = max(fluxes[k] + float((others[k] * residual * weight).sum()) / information, 0.0)
            residual -= (new - fluxes[k]) * others[k] * use
            fluxes[k] = new
            snr[k] = new * math.sqrt(information)
    total = max(float(star.sum()), 1e-12)
    return BandFit(
        flux=flux,
        sigma=flux_sigma,
        position=position,
        position_sigma=position_sigma,
        lost=float(1 - star[use].sum() / total),
        neighbour_snr=snr,
        reduced_chi2=reduced_chi2,
        star_light=star_light,
        sky=sky,
        top_left=top_left,
    )


def _fit_star(
    pixels: np.ndarray,
    use: np.ndarray,
    noise: np.ndarray,
    psf: PsfStamps,
    position: np.ndarray,
    region: tuple[slice, slice],
    half: int,
    move: bool,
    flux: float | None,
    joint: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple | None:
    """Non-negative weighted least squares of one star's flux on ``use``, beside ``joint`` sources.

    ``noise``: each pixel's variance less the light fitted here; ``joint``: PSFs (``k h w``) of
    sources fitted with the star, flux only, and each one's Gaussian prior mean and width (``k``
    each). Fluxes are kept non-negative: a star's wings and sources around them trade light, and
    signed fits can trade it without bound. The weights are iterated from the model.
    Returns the star's flux and its sigma (widened by the reduced chi-square above 1), position
    and its sigmas (from the Fisher matrix of flux and position at the fit when ``move``, else
    inf), its PSF on the region, the reduced chi-square, and the joint sources' fluxes and
    sigmas; None if the fit fails.
    """
    values = pixels[use]
    star = stamp_on(psf, position, region, half)
    extra = joint[0][:, use].T
    k = extra.shape[1]
    # a local sky offset, as two non-negative columns (+1, -1) without a prior
    ones = np.ones((len(values), 1))
    matrix = np.concatenate([star[use][:, None], extra, ones, -ones], -1)
    prior_mean, prior_root = joint[1], 1 / joint[2]
    # the first weights from the data, then from the model (no bias towards low counts)
    variance = noise[use] + np.clip(values if flux is None else flux * star[use], 0, None)
    solution = None
    for iteration in range(FIT_ITERATIONS):
        root = 1 / np.sqrt(variance)
        # the priors are rows of the system
        system = np.concatenate(
            [matrix * root[:, None], np.pad(np.diag(prior_root), ((0, 0), (1, 2)))]
        )
        target = np.concatenate([values * root, prior_mean * prior_root])
        if iteration:
            # the sky stays where the data-weighted first fit put it: with the model's weights
            # a crowd's lumps around a deep core can trade the star's faint wings for sky
            system, target = system[:, :-2], target - system[:, -2:] @ solution[-2:]
        found, _ = optimize.nnls(system, target, maxiter=50 * system.shape[1])
        solution = found if not iteration else np.concatenate([found, solution[-2:]])
        if not np.all(np.isfinite(solution)) or solution[0] <= 0:
            return None
        star_light = solution[0] * star[use]
        # the local sky is light too (a cluster's unresolved stars): its photon noise counts
        light = matrix @ solution
        variance = noise[use] + np.clip(light, 0, None) + _model_variance(star_light, solution[0])
    residual = values - matrix @ solution
    active = np.concatenate([[True], solution[1 : 1 + k] > 0])
    n_active = int(active.sum())
    reduced_chi2 = float((residual**2 / variance).sum()) / max(len(values) - n_active - 1, 1)
    widen = math.sqrt(max(reduced_chi2, 1.0))
    # the Fisher matrix of the star, the joint sources off their bound and the sky
    columns = np.concatenate([matrix[:, : 1 + k][:, active], ones], -1)
    if move:
        step = 0.05
        d_row = (stamp_on(psf, position + [step, 0], region, half) - star) / step
        d_col = (stamp_on(psf, position + [0, step], region, half) - star) / step
        slopes = solution[0] * np.stack([d_row[use], d_col[use]], -1)
        columns = np.concatenate([columns, slopes], -1)
    fisher = columns.T @ (columns / variance[:, None])
    index = np.arange(1, n_active)
    fisher[index, index] += prior_root[active[1:]] ** 2
    try:
        covariance = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        return None
    sigmas = np.sqrt(np.clip(np.diag(covariance), 0, None)) * widen
    joint_sigma = np.full(k, np.inf)
    joint_sigma[active[1:]] = sigmas[1:n_active]
    position_sigma = sigmas[-2:] if move else np.full(2, np.inf)
    return (
        float(solution[0]),
        float(sigmas[0]),
        position,
        position_sigma,
        star,
        reduced_chi2,
        solution[1 : 1 + k],
        joint_sigma,
    )


def _search(
    pixels: np.ndarray,
    use: np.ndarray,
    sky: np.ndarray,
    psf: PsfStamps,
    start: np.ndarray,
    region: tuple[slice, slice],
    half: int,
) -> np.ndarray:
    """The position near ``start`` whose PSF (flux free) best fits ``pixels`` on ``use``.

    Grids of :data:`SEARCH_STEPS_PX`, coarse to fine, the first over :data:`SEARCH_PX`.
    """
    values = pixels[use]
    star = stamp_on(psf, start, region, half)[use]
    rough = max(float(values.sum()) / max(float(star.sum()), 1e-12), 0.0)  # a first flux
    light = np.clip(values, 0, None)
    weight = 1 / (sky[use] + light + _model_variance(light, rough))
    best, reach = np.asarray(start, dtype=np.float64), SEARCH_PX
    for step in SEARCH_STEPS_PX:
        offsets = np.arange(-reach, reach + 1e-9, step)
        centre, best_chi2 = best, np.inf
        for d_row in offsets:
            for d_col in offsets:
                position = centre + [d_row, d_col]
                star = stamp_on(psf, position, region, half)[use]
                information = float((star**2 * weight).sum())
                if information <= 0:
                    continue
                flux = float((star * values * weight).sum()) / information
                chi2 = float((((values - flux * star) ** 2) * weight).sum())
                if flux > 0 and chi2 < best_chi2:
                    best, best_chi2 = position, chi2
        reach = 3 * step / 4
    return best
