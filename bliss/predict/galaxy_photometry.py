"""Model-fit photometry of bright galaxies: their fluxes given the pixels and the network's shapes.

For a known profile a galaxy's image is linear in its flux, as a star's is for a known PSF, so
a weighted least-squares fit of the pixels reaches the information they hold. The profile is not
known: the network gives a posterior over its six bulge + disk parameters. Each bright galaxy's
shape, position and per-band fluxes are therefore fitted together (Levenberg-Marquardt), with
the network's shape posterior as the prior and its neighbours (stars and galaxies) and a local
sky fitted alongside; the flux interval is the Laplace approximation's, so it includes what
the pixels leave unknown of the shape. This is SDSS PHOTO's model magnitude with the network's
posterior as its starting point and prior.

The network's own flux posterior is broad for bright sources (its heads see compressed pixels;
few bright galaxies are in a steep number-count prior). The fit replaces it where the two agree
and the fit's interval is narrower. The fit uses the PSF models
:func:`bliss.predict.psf_photometry.refine_star_fluxes` chose per band (the image's own model
or a Moffat fitted to its stars), on the same flux scale as its star fluxes.
"""

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy.special import ndtri

from bliss.catalog import FullCatalog
from bliss.catalog.tile import GALAXY_KEYS
from bliss.predict.psf_model import MoffatShape
from bliss.predict.psf_photometry import PRIOR_WIDEN, PsfStamps, network_sigma, padded
from bliss.protocols import SurveyImage
from bliss.simulator.torch_render import draw_unit_stamps, psf_image_fourier

__all__ = ["N_SHAPE_DRAWS", "refine_galaxy_fluxes"]

#: draws of each galaxy's shape posterior that give the fit its prior (mean and spread)
N_SHAPE_DRAWS = 16
#: galaxies whose flux the pixels measure at this S/N in some band are fitted (the network's own
#: intervals of bright galaxies can span a factor of 2, so they cannot pick them)
GALAXY_SNR = 30.0
#: half-light radii (along the major axis) and PSF FWHMs the fitted region reaches from the centre
EXTENT_HLR = 3.0
EXTENT_FWHM = 2.0
#: sides of the fitted region, pixels (odd)
MIN_REGION_PX = 15
MAX_REGION_PX = 63
#: detections this far outside the region are fitted alongside (their light reaches in), pixels
NEIGHBOUR_MARGIN_PX = 3
#: half-side of the PSF stamps the templates are convolved with, pixels
PSF_HALF_PX = 20
#: fractional flux error added in quadrature: what a template misses at its edges (the
#: renderer's folding threshold), its sub-pixel interpolation, and a bulge profile other than
#: de Vaucouleurs' (Sersic n = 2 bulges came out ~2 % bright at r 16-18 on SDSS-like fields;
#: with 1.5 % their 90 % intervals covered 0.72)
FLUX_FLOOR = 0.03
#: the network's shape posterior, as the fit's prior, is widened by this factor (it already
#: holds what the network read from the same pixels), after a floor on its spread
SHAPE_PRIOR_WIDEN = 2.0
MIN_SHAPE_SPREAD = 0.05
#: the fit's nonlinear coordinates: the shape's six (unconstrained) and a position shift
N_NONLINEAR = 8
#: their finite-difference step (unconstrained shape units, pixels)
NONLINEAR_STEP = 0.01
#: the fitted shape stays within this many (widened) prior spreads of the network's posterior
TRUST_SPREAD = 4.0
#: fractional error of the light the fitted profile puts beyond the region
EXTRAPOLATION_ERROR = 0.5
#: a fit is kept where it agrees with the network's flux within this many combined sigmas in
#: every band: the two measure the same flux, and a larger disagreement means the scene model
#: (the detections and their profiles) is wrong there
CONSISTENCY = 3.0
#: the prior on the position shift, and its largest value, pixels
SHIFT_PRIOR_PX = 0.5
MAX_SHIFT_PX = 1.5
#: Levenberg-Marquardt iterations at most, and the relative cost decrease that ends them
MAX_ITERATIONS = 15
CONVERGED = 1e-4


class _Fit(NamedTuple):
    """One galaxy's fit.

    Fluxes and sigmas (``c`` each, electrons on the PSF model's scale), shape (``6``) and
    position (``2``).
    """

    fluxes: np.ndarray
    sigma: np.ndarray
    shape: np.ndarray
    position: np.ndarray


def refine_galaxy_fluxes(
    image: SurveyImage,
    catalog: FullCatalog,
    psf_models: Sequence[PsfStamps],
    shape_draws: torch.Tensor,
    quantiles: Sequence[float],
    pixel_scale_arcsec: float,
    aperture_scale: np.ndarray | None = None,
) -> FullCatalog:
    """Replace bright galaxies' fluxes by model fits where those agree and are narrower.

    Args:
        image: the image the catalog came from (electrons, sky included).
        catalog: the predictor's one-image catalog, fluxes in the image's nanomaggies, with
            ``prob_galaxy``, ``fluxes@<q>`` for ``quantiles`` and the six
            :data:`~bliss.catalog.tile.GALAXY_KEYS` (point estimates).
        psf_models: the PSF model of each band (from ``refine_star_fluxes``).
        shape_draws: draws of the six shape parameters from the posterior of each source.
            Shape: ``k n 6`` (at least :data:`N_SHAPE_DRAWS` draws).
        quantiles: the flux quantiles in the catalog; where the fit is kept they become its
            Gaussian quantiles.
        pixel_scale_arcsec: pixel side (shape radii are in arcsec).
        aperture_scale: per band, the factor the catalog's fluxes carry beyond the PSF model's
            scale (an image's aperture correction), as the star fits divide it out [default: 1].

    Returns:
        The catalog with refined ``fluxes`` and ``fluxes@<q>``; other keys unchanged.

    Shapes:
        catalog keys ``1 n d``.
    """
    n = int(catalog["n_sources"][0])
    bounds = [f"fluxes@{min(quantiles, default=0.5):g}", f"fluxes@{max(quantiles, default=0.5):g}"]
    if (
        n == 0
        or "prob_galaxy" not in catalog
        or len(psf_models) != len(image.bands)
        or not all(key in catalog for key in bounds)
        or bounds[0] == bounds[1]
    ):
        return catalog
    sigma_net = network_sigma(catalog, quantiles)
    if sigma_net is None:
        return catalog
    sigma_net = sigma_net[:n].astype(np.float64)
    fluxes = catalog["fluxes"][0, :n].double().numpy()
    galaxy = catalog["prob_galaxy"][0, :n, 0].numpy() >= 0.5
    positions = catalog["plocs"][0, :n].double().numpy()
    per_electron = 10 ** (-0.4 * (np.asarray(image.magzero, dtype=np.float64) - 22.5))
    fwhm_px = np.asarray(image.psf_fwhm_arcsec, dtype=np.float64) / pixel_scale_arcsec
    snr = _photon_snr(image, positions, fluxes / per_electron, fwhm_px)
    targets = np.flatnonzero(galaxy & (snr >= GALAXY_SNR).any(1))
    if not len(targets):
        return catalog
    params = torch.cat([catalog[key][0, :n] for key in GALAXY_KEYS], -1).double().numpy()
    draws = shape_draws[:N_SHAPE_DRAWS, :n].double().numpy()
    scale = np.ones(len(image.bands)) if aperture_scale is None else np.asarray(aperture_scale)
    to_model = 1 / (per_electron * scale)  # nanomaggies -> electrons on the PSF model's scale
    z = {q: float(ndtri(q)) for q in quantiles}
    new = {q: fluxes.copy() for q in ["point", *quantiles]}
    keep = np.zeros_like(fluxes, dtype=bool)
    shapes = _valid_shapes(params)
    priors = {target: _shape_prior(_valid_shapes(draws[:, target])) for target in targets}
    network = (fluxes * to_model, sigma_net * to_model)  # electrons on the PSF model's scale
    current = network[0].copy()
    widest_fwhm = float(fwhm_px.max())
    fits: dict[int, _Fit] = {}
    # two passes: the second sees each target's neighbours with the shapes, positions and
    # fluxes the first fitted them (the network's point estimates of a blend's members pull
    # each other's fluxes by ~10 %)
    for second in (False, True):
        for target in targets:
            scene = _scene(
                target, positions, shapes, image.images.shape[1:], pixel_scale_arcsec, widest_fwhm
            )
            if second and not any(j in fits for j in scene[2]):
                continue  # no fitted neighbour: the first pass's fit stands
            fit = _fit_target(
                image,
                target,
                scene,
                positions,
                shapes,
                priors[target],
                galaxy,
                current,
                network,
                psf_models,
                pixel_scale_arcsec,
            )
            # a fit that disagrees with the network (a shredded or unrecognised blend, a galaxy
            # cut by the image's edge) is dropped, and its neighbours see the network's again
            if fit is None or not _consistent(
                fit.fluxes, fit.sigma, network[0][target], network[1][target]
            ):
                fits.pop(target, None)
                current[target] = network[0][target]
                shapes[target] = _valid_shapes(params[[target]])[0]
                positions[target] = catalog["plocs"][0, target].double().numpy()
                continue
            fits[target] = fit
            current[target], shapes[target], positions[target] = fit.fluxes, fit.shape, fit.position
    for target, fit in fits.items():
        mean, sigma = fit.fluxes / to_model, fit.sigma / to_model
        old_width = catalog[bounds[1]][0, target] - catalog[bounds[0]][0, target]
        narrower = (z[max(quantiles)] - z[min(quantiles)]) * sigma < old_width.double().numpy()
        keep[target] = narrower & (mean > 0)
        new["point"][target] = mean
        for q in quantiles:
            new[q][target] = mean + z[q] * sigma
    if not keep.any():
        return catalog
    data = dict(catalog.items())
    data["fluxes"] = padded(catalog["fluxes"], np.where(keep, new["point"], fluxes))
    for q in quantiles:
        key = f"fluxes@{q:g}"
        if key in catalog:
            old = catalog[key][0, :n].double().numpy()
            data[key] = padded(catalog[key], np.where(keep, new[q], old))
    return FullCatalog(catalog.height_px, catalog.width_px, data)


def _consistent(
    fit: np.ndarray, fit_sigma: np.ndarray, network: np.ndarray, network_sigma: np.ndarray
) -> bool:
    """Whether a fit's fluxes agree with the network's in every band (:data:`CONSISTENCY`)."""
    spread = np.hypot(fit_sigma, network_sigma)
    return bool(np.all(np.abs(fit - network) <= CONSISTENCY * spread))


def _photon_snr(
    image: SurveyImage, positions: np.ndarray, electrons: np.ndarray, fwhm_px: np.ndarray
) -> np.ndarray:
    """S/N a PSF-sized source of these fluxes would have over the sky at its position. ``n c``.

    The noise-equivalent area of a Gaussian PSF, 4 pi sigma^2: a lower bound for a galaxy's.
    """
    rows = np.clip(positions[:, 0].astype(int), 0, image.background.shape[1] - 1)
    cols = np.clip(positions[:, 1].astype(int), 0, image.background.shape[2] - 1)
    sky = np.asarray(image.background[:, rows, cols], dtype=np.float64).T  # n c
    area = 4 * math.pi * (fwhm_px / (2 * math.sqrt(2 * math.log(2)))) ** 2
    signal = np.clip(electrons, 0, None)
    return signal / np.sqrt(signal + np.clip(sky, 0, None) * area)


def _scene(
    target: int,
    positions: np.ndarray,
    shapes: np.ndarray,
    image_shape: tuple[int, int],
    scale: float,
    fwhm: float,
) -> tuple[slice, slice, np.ndarray]:
    """A target's region (:func:`_region`) and the detections fitted with it.

    Those are the detections whose centre lies within :data:`NEIGHBOUR_MARGIN_PX` of the region.
    """
    rows, cols = _region(positions[target], shapes[target], image_shape, scale, fwhm)
    low = np.array([rows.start, cols.start]) - NEIGHBOUR_MARGIN_PX
    high = np.array([rows.stop, cols.stop]) + NEIGHBOUR_MARGIN_PX
    inside = np.all((positions > low) & (positions < high), axis=1)
    inside[target] = False
    return rows, cols, np.flatnonzero(inside)


def _region(
    position: np.ndarray, shape: np.ndarray, image_shape: tuple[int, int], scale: float, fwhm: float
) -> tuple[slice, slice]:
    """The pixels a galaxy's fit uses: a square around it reaching past most of its light."""
    disk_frac, _, disk_q, disk_hlr, bulge_q, bulge_hlr = shape
    disk = disk_hlr / math.sqrt(max(disk_q, 1e-2)) if disk_frac > 0.05 else 0.0
    bulge = bulge_hlr / math.sqrt(max(bulge_q, 1e-2)) if disk_frac < 0.95 else 0.0
    major = max(disk, bulge)
    radius = EXTENT_HLR * major / scale + EXTENT_FWHM * fwhm
    half = int(np.clip(math.ceil(radius), MIN_REGION_PX // 2, MAX_REGION_PX // 2))
    row, col = (int(math.floor(v)) for v in position)
    rows = slice(max(row - half, 0), min(row + half + 1, image_shape[0]))
    cols = slice(max(col - half, 0), min(col + half + 1, image_shape[1]))
    return rows, cols


def _shape_prior(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the shape draws in the fit's unconstrained coordinates (``6`` each).

    The position angle's are circular statistics of twice the angle (it has period pi). The
    spread is widened by :data:`SHAPE_PRIOR_WIDEN`: the network's posterior already holds what
    it read from these pixels, which the fit then reads again.
    """
    u = _unconstrained(draws)
    mean, spread = u.mean(0), u.std(0)
    doubled = np.exp(2j * draws[:, 1]).mean()
    mean[1] = 0.5 * np.angle(doubled)
    resultant = min(max(abs(doubled), 1e-6), 1.0)
    spread[1] = 0.5 * math.sqrt(-2 * math.log(resultant))
    spread = np.maximum(spread, MIN_SHAPE_SPREAD) * SHAPE_PRIOR_WIDEN
    spread[1] = min(spread[1], math.pi / 2)
    return mean, spread


def _unconstrained(shapes: np.ndarray) -> np.ndarray:
    """Shape rows (``r 6``, :data:`GALAXY_KEYS` order) as logits, angle and log radii."""
    u = np.empty_like(shapes)
    for column in (0, 2, 4):
        value = np.clip(shapes[:, column], 1e-3, 1 - 1e-3)
        u[:, column] = np.log(value / (1 - value))
    u[:, 1] = shapes[:, 1]
    u[:, 3], u[:, 5] = np.log(shapes[:, 3]), np.log(shapes[:, 5])
    return u


def _constrained(u: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_unconstrained`."""
    shapes = np.empty_like(u)
    for column in (0, 2, 4):
        shapes[:, column] = 1 / (1 + np.exp(-u[:, column]))
    shapes[:, 1] = u[:, 1]
    shapes[:, 3], shapes[:, 5] = np.exp(u[:, 3]), np.exp(u[:, 5])
    return _valid_shapes(shapes)


def _fit_target(
    image: SurveyImage,
    target: int,
    scene: tuple[slice, slice, np.ndarray],
    positions: np.ndarray,
    shapes: np.ndarray,
    prior: tuple[np.ndarray, np.ndarray],
    galaxy: np.ndarray,
    start: np.ndarray,
    network: tuple[np.ndarray, np.ndarray],
    psf_models: Sequence[PsfStamps],
    scale: float,
) -> _Fit | None:
    """A target's fluxes, their sigmas (``c`` each), its shape (``6``) and position (``2``).

    A Levenberg-Marquardt fit of the target's shape (six parameters, with the network's shape
    posterior as a prior), its position (a shift from the network's, prior
    :data:`SHIFT_PRIOR_PX`) and the fluxes of the target and its neighbours in every band (a
    weak prior from the network's, as for stars), neighbours at their current shapes. The
    flux variance is the Laplace approximation's (so it includes the shape's uncertainty),
    widened by each band's reduced chi-square when above 1, plus the light the profile family
    misses (:func:`_missed_light`). ``scene``: the target's region and neighbours
    (:func:`_scene`); ``start``: every source's starting flux; ``network``: its network flux and
    sigma (the flux prior); ``n c`` each, electrons on the PSF model's scale. None where the
    region holds too few pixels or the fit fails.
    """
    rows, cols, neighbours = scene
    top, left = rows.start, cols.start
    size = (rows.stop - top, cols.stop - left)
    local = positions - np.array([top, left])
    n_bands, m = len(image.bands), len(neighbours)
    data = image.images[:, rows, cols] - image.background[:, rows, cols]
    usable = np.isfinite(data).all(0)
    n_pixels = int(usable.sum())
    n_linear = 1 + m + 1  # the target, its neighbours and a local sky, in every band
    n_fluxes = n_bands * n_linear
    if n_pixels <= N_NONLINEAR + n_linear:
        return None
    psfs = np.stack([_psf_stamp(psf, positions[target]) for psf in psf_models])  # c h w
    # templates are drawn on a stamp twice the region's side around it (light beyond a
    # stamp's edge wraps around), with the PSF transformed once per target
    stamp = 2 * max(size) + 1
    origin = np.array([top, left]) - (stamp - np.array(size)) // 2
    psf_fourier = psf_image_fourier(torch.from_numpy(psfs), stamp)
    crop = (
        slice(top - origin[0], top - origin[0] + size[0]),
        slice(left - origin[1], left - origin[1] + size[1]),
    )

    def draw(plocs: np.ndarray, rows_shapes: np.ndarray, is_galaxy: np.ndarray) -> np.ndarray:
        """Unit-flux templates of sources at region positions ``plocs``, on the usable pixels. ``r c p``."""
        if not len(plocs):
            return np.zeros((0, n_bands, n_pixels))
        shift = plocs + np.array([top, left]) - origin - 0.5
        stamps = draw_unit_stamps(
            torch.from_numpy(rows_shapes),
            torch.from_numpy(is_galaxy),
            torch.from_numpy(shift),
            psf_fourier,
            scale,
        ).numpy()
        return stamps[..., crop[0], crop[1]][..., usable]

    # the image's background is an estimate: under a galaxy, a local error of 1e-4 of an LSST
    # coadd's sky is ~2 % of an r = 24 galaxy's flux, so each band gets a constant sky term
    neighbour_templates = np.concatenate(
        [
            draw(local[neighbours], shapes[neighbours], galaxy[neighbours]),
            np.ones((1, n_bands, n_pixels)),
        ]
    )
    values = data[:, usable]  # c p
    sources = np.concatenate([[target], neighbours])
    network_flux, network_spread = network
    flux_prior = np.concatenate([network_flux[sources], np.zeros((1, n_bands))])  # n_linear c
    flux_spread = np.maximum(PRIOR_WIDEN * network_spread[sources], np.abs(network_flux[sources]))
    flux_spread = np.concatenate([flux_spread, np.full((1, n_bands), np.inf)])
    flux_spread = np.where(flux_spread > 0, flux_spread, np.inf)  # the sky's: none
    prior_mean, prior_spread = prior
    # the shape's six coordinates, then the shift of the position in rows and columns
    u = np.concatenate([_unconstrained(shapes[[target]])[0], np.zeros(2)])
    prior_mean = np.concatenate([prior_mean, np.zeros(2)])
    prior_spread = np.concatenate([prior_spread, np.full(2, SHIFT_PRIOR_PX)])
    fluxes = np.concatenate([np.clip(start[sources], 0, None), np.zeros((1, n_bands))])
    steps = np.vstack([np.zeros(N_NONLINEAR), np.eye(N_NONLINEAR) * NONLINEAR_STEP])

    def draw_target(points: np.ndarray) -> np.ndarray:
        """The target's unit-flux templates at rows of (shape, shift) coordinates. ``r c p``."""
        plocs = local[target] + points[:, 6:]
        return draw(plocs, _constrained(points[:, :6]), np.ones(len(points), bool))

    target_templates = draw_target(u + steps)
    start_model = np.einsum("rc,rcp->cp", fluxes[1:], neighbour_templates) + (
        fluxes[0][:, None] * target_templates[0]
    )
    background = image.background[:, rows, cols][:, usable]
    root_weight = 1 / np.sqrt(np.clip(background + np.clip(start_model, 0, None), 1e-3, None))

    k = N_NONLINEAR
    # parameter order: the k nonlinear coordinates, then fluxes[source, band] row by row
    flux_index = k + np.arange(n_fluxes).reshape(n_linear, n_bands)

    def pixel_residuals(fluxes: np.ndarray, template: np.ndarray) -> np.ndarray:
        """Weighted data less model, ``c p``."""
        model = fluxes[0][:, None] * template + np.einsum(
            "rc,rcp->cp", fluxes[1:], neighbour_templates
        )
        return root_weight * (values - model)

    def prior_residuals(u: np.ndarray, fluxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _wrapped(u - prior_mean) / prior_spread, (fluxes - flux_prior) / flux_spread

    def cost_of(u: np.ndarray, fluxes: np.ndarray, template: np.ndarray) -> float:
        shape_term, flux_term = prior_residuals(u, fluxes)
        pixels = pixel_residuals(fluxes, template)
        return float((pixels**2).sum() + (shape_term**2).sum() + (flux_term**2).sum())

    def normal_equations(
        u: np.ndarray, fluxes: np.ndarray, templates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``J^T J`` and ``J^T r`` of the residuals, assembled band by band.

        Each band's pixels depend on the nonlinear coordinates and that band's fluxes only.
        """
        slopes = (templates[1:] - templates[0]) / NONLINEAR_STEP  # k c p
        every = np.concatenate([templates[:1], neighbour_templates])  # n_linear c p
        residual = pixel_residuals(fluxes, templates[0])  # c p
        normal = np.zeros((k + n_fluxes, k + n_fluxes))
        gradient = np.zeros(k + n_fluxes)
        for band in range(n_bands):
            block = (
                np.concatenate([fluxes[0, band] * slopes[:, band], every[:, band]])
                * -root_weight[band]
            )  # (k + n_linear) p
            index = np.concatenate([np.arange(k), flux_index[:, band]])
            normal[np.ix_(index, index)] += block @ block.T
            gradient[index] += block @ residual[band]
        shape_term, flux_term = prior_residuals(u, fluxes)
        normal[np.diag_indices(k)] += 1 / prior_spread**2
        gradient[:k] += shape_term / prior_spread
        flux_diagonal = flux_index.ravel()
        normal[flux_diagonal, flux_diagonal] += (1 / flux_spread**2).ravel()
        gradient[flux_diagonal] += (flux_term / flux_spread).ravel()
        return normal, gradient

    cost = cost_of(u, fluxes, target_templates[0])
    damping = 1e-2
    for _ in range(MAX_ITERATIONS):
        normal, gradient = normal_equations(u, fluxes, target_templates)
        improved = False
        for _ in range(6):
            damped = normal + damping * np.diag(np.diag(normal) + 1e-12)
            try:
                step = -np.linalg.solve(damped, gradient)
            except np.linalg.LinAlgError:
                return None
            trial_u = u + step[:k]
            # a trust region: the shape within TRUST_SPREAD of its prior, the shift within bounds
            reach = TRUST_SPREAD * prior_spread[:6]
            trial_u[:6] = prior_mean[:6] + np.clip(
                _wrapped(trial_u[:6] - prior_mean[:6]), -reach, reach
            )
            trial_u[6:] = np.clip(trial_u[6:], -MAX_SHIFT_PX, MAX_SHIFT_PX)
            trial_fluxes = fluxes + step[k:].reshape(n_linear, n_bands)
            trial_template = draw_target(trial_u[None])
            trial_cost = cost_of(trial_u, trial_fluxes, trial_template[0])
            if np.isfinite(trial_cost) and trial_cost < cost:
                improved = True
                break
            damping *= 4
        if not improved:
            break
        converged = cost - trial_cost < CONVERGED * cost
        u, fluxes, cost = trial_u, trial_fluxes, trial_cost
        damping = max(damping / 3, 1e-6)
        target_templates = draw_target(u + steps)
        if converged:
            break
    normal, _ = normal_equations(u, fluxes, target_templates)
    try:
        covariance = np.linalg.inv(normal)
    except np.linalg.LinAlgError:
        return None
    pixels = pixel_residuals(fluxes, target_templates[0])
    dof = max(n_pixels - n_linear - N_NONLINEAR / n_bands, 1.0)
    reduced_chi2 = (pixels**2).sum(1) / dof
    variance = np.diag(covariance)[flux_index[0]] * np.maximum(reduced_chi2, 1.0)
    target_light = np.clip(fluxes[0][:, None] * target_templates[0], 0, None)
    neighbour_light = np.einsum(
        "rc,rcp->cp", np.clip(fluxes[1:-1], 0, None), neighbour_templates[:-1]
    )
    variance += _missed_light(pixels / root_weight, root_weight, target_light, neighbour_light)
    # the light the fitted profile puts beyond the region is its extrapolation, not measured:
    # it is only as right as the profile family (a Sersic bulge of index 6 has far more there)
    outside = np.clip(1 - target_templates[0].sum(1), 0, 1)
    variance += (EXTRAPOLATION_ERROR * np.abs(fluxes[0]) * outside) ** 2
    sigma = np.hypot(np.sqrt(np.clip(variance, 0, None)), FLUX_FLOOR * np.abs(fluxes[0]))
    if not (np.all(np.isfinite(fluxes[0])) and np.all(np.isfinite(sigma))):
        return None
    position = positions[target] + u[6:]
    return _Fit(fluxes[0], sigma, _constrained(u[None, :6])[0], position)


def _missed_light(
    residual: np.ndarray,
    root_weight: np.ndarray,
    target_light: np.ndarray,
    neighbour_light: np.ndarray,
) -> np.ndarray:
    """Variance of the target's flux that its profile family does not describe. ``c``.

    A galaxy whose profile is not bulge + disk (a Sersic bulge of another index, irregular
    light) is fitted by the closest such profile, whose flux differs from the galaxy's by about
    the light it leaves in the residual. That light is the residual summed over the region,
    each pixel weighted by the target's share of the fitted light (neighbours keep theirs); its
    square, less what noise alone gives it, is added to the flux variance: zero on average for
    a galaxy the family describes. Arrays ``c p``: data less model, the fit's weights' square
    roots, the target's fitted light and its neighbours'.
    """
    share = target_light / np.clip(target_light + neighbour_light, 1e-12, None)
    missed = (share * residual).sum(1)
    noise = (share**2 / root_weight**2).sum(1)
    return np.clip(missed**2 - noise, 0, None)


def _psf_stamp(psf: PsfStamps, position: np.ndarray) -> np.ndarray:
    """A band's PSF at a target, unit sum. Shape ``h w``.

    An image's model varies over hundreds of pixels, not within a region; a Moffat is the same
    everywhere (drawn once).
    """
    if isinstance(psf, MoffatShape):
        return _moffat_stamp(psf)
    stamp = np.clip(psf.stamp(*position, 0.0, 0.0, PSF_HALF_PX), 0, None)
    return stamp / stamp.sum()


@functools.lru_cache(maxsize=64)
def _moffat_stamp(psf: MoffatShape) -> np.ndarray:
    stamp = psf.stamp(0.0, 0.0, 0.0, 0.0, PSF_HALF_PX)
    return stamp / stamp.sum()


def _wrapped(delta: np.ndarray) -> np.ndarray:
    """Coordinate differences with the position angle's brought into (-pi/2, pi/2]."""
    out = delta.copy()
    out[..., 1] = (out[..., 1] + math.pi / 2) % math.pi - math.pi / 2
    return out


def _valid_shapes(shapes: np.ndarray) -> np.ndarray:
    """Shape rows with draws at their parameters' edges (q of 0, radii of 0) kept drawable."""
    out = shapes.copy()
    out[:, 0] = np.clip(out[:, 0], 0.0, 1.0)
    for column in (2, 4):
        out[:, column] = np.clip(out[:, column], 0.02, 1.0)
    for column in (3, 5):
        out[:, column] = np.clip(out[:, column], 1e-3, 50.0)
    return out
