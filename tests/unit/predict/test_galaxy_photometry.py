"""Model-fit galaxy photometry on GalSim-rendered galaxies with a known answer."""

import galsim
import numpy as np
import pytest
import torch

from bliss.catalog import FullCatalog
from bliss.catalog.tile import GALAXY_KEYS
from bliss.predict.galaxy_photometry import (
    GALAXY_SNR,
    N_SHAPE_DRAWS,
    refine_galaxy_fluxes,
)
from bliss.predict.psf_photometry import nominal_psf_models
from bliss.protocols import SurveyImage
from bliss.simulator.render import galaxy_profile, moffat_psf

SCALE = 0.2  # arcsec per pixel
FWHM = 0.7
BETA = 3.5
SKY = 1000.0
MAGZERO = 22.5  # one electron is one nanomaggy
SIZE = 64
QUANTILES = (0.05, 0.95)
#: a disk-dominated galaxy, 0.8" disk, 0.3" bulge, position angle 0.7 rad
SHAPE = np.array([0.6, 0.7, 0.5, 0.8, 0.7, 0.3])


def _render(sources: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """Noise-free GalSim image of galaxies ``(position (row, col), shape, electrons)``."""
    image = galsim.ImageD(SIZE, SIZE, scale=SCALE)
    for position, shape, flux in sources:
        profile = galsim.Convolve(galaxy_profile(shape, flux), moffat_psf(FWHM, BETA))
        offset = (position[1] - SIZE / 2, position[0] - SIZE / 2)
        stamp = profile.drawImage(nx=SIZE, ny=SIZE, scale=SCALE, offset=offset)
        image += stamp
    return image.array


def _survey_image(pixels: np.ndarray, background: float = SKY) -> SurveyImage:
    return SurveyImage(
        path=None,
        bands=("r",),
        images=pixels[None].astype(np.float32),
        background=np.full((1, SIZE, SIZE), background, np.float32),
        psf_fwhm_arcsec=np.array([FWHM]),
        magzero=np.array([MAGZERO]),
        wcs=None,
    )


def _network(positions, shapes, fluxes, rng, prob_galaxy=0.99):
    """A stand-in for the network: positions off by 0.1 px, fluxes 20 % low with intervals a
    factor 1.5 wide, shapes perturbed; and ``N_SHAPE_DRAWS`` draws scattered about them."""
    n = len(positions)
    jittered = shapes * np.exp(rng.normal(0, 0.1, shapes.shape))
    jittered[:, 0] = 0.5
    jittered[:, 1] = shapes[:, 1] + 0.2
    jittered[:, [2, 4]] = np.clip(jittered[:, [2, 4]], 0.1, 0.95)
    estimate = np.asarray(fluxes, float)[:, None] * 0.8
    data = {
        "n_sources": torch.tensor([n]),
        "plocs": torch.tensor(positions + rng.normal(0, 0.1, (n, 2))).float()[None],
        "fluxes": torch.tensor(estimate).float()[None],
        "fluxes@0.05": torch.tensor(estimate / 1.5).float()[None],
        "fluxes@0.95": torch.tensor(estimate * 1.5).float()[None],
        "prob_galaxy": torch.full((1, n, 1), prob_galaxy),
    }
    for index, key in enumerate(GALAXY_KEYS):
        data[key] = torch.tensor(jittered[:, index]).float()[None, :, None]
    draws = torch.tensor(jittered)[None] * torch.exp(0.2 * torch.randn(N_SHAPE_DRAWS, n, 6))
    draws[..., 0] = draws[..., 0].clamp(0, 1)
    draws[..., [2, 4]] = draws[..., [2, 4]].clamp(0.05, 1)
    return FullCatalog(SIZE, SIZE, data), draws


def _refined(image: SurveyImage, catalog: FullCatalog, draws: torch.Tensor) -> FullCatalog:
    psfs = nominal_psf_models(image, SCALE, BETA)
    return refine_galaxy_fluxes(image, catalog, psfs, draws, QUANTILES, SCALE)


def _zscores(flux: float, background_offset: float = 0.0, trials: int = 6) -> np.ndarray:
    """Relative errors and z-scores of the refined flux of one galaxy over noise draws. ``t 2``."""
    rng = np.random.default_rng(3)
    torch.manual_seed(3)
    position = np.array([31.3, 32.6])
    clean = _render([(position, SHAPE, flux)]) + SKY
    out = []
    for _ in range(trials):
        pixels = rng.poisson(clean).astype(np.float64)
        image = _survey_image(pixels, SKY - background_offset)
        catalog, draws = _network(position[None], SHAPE[None], [flux], rng)
        refined = _refined(image, catalog, draws)
        estimate = refined["fluxes"][0, 0, 0].item()
        sigma = (refined["fluxes@0.95"] - refined["fluxes@0.05"])[0, 0, 0].item() / 3.29
        out.append(((estimate - flux) / flux, (estimate - flux) / sigma))
    return np.array(out)


def test_bright_galaxy_flux_is_recovered_from_a_wrong_start():
    # S/N ~ 400: the start is 20 % low, the fit's statistical error ~0.3 %, its floor 1.5 %
    errors = _zscores(2e5)
    assert abs(errors[:, 0].mean()) < 0.01
    assert np.abs(errors[:, 1]).max() < 3
    # the interval is honest but not vacuous: the network's spanned a factor of 2.25
    assert np.abs(errors[:, 0]).max() < 0.03


def test_a_background_offset_is_taken_out_by_the_local_sky():
    # the background estimate 2 e-/px too high (2e-3 of the sky): ~2 % of the flux over the
    # region's ~2000 px, which a fit without a sky term would lose
    errors = _zscores(2e5, background_offset=-2.0)
    assert abs(errors[:, 0].mean()) < 0.01


def test_overlapping_neighbour_keeps_its_own_light():
    rng = np.random.default_rng(5)
    torch.manual_seed(5)
    positions = np.array([[31.3, 30.6], [33.8, 37.2]])  # 1.4" apart: blended
    shapes = np.stack([SHAPE, np.array([1.0, -0.4, 0.6, 0.5, 0.8, 0.2])])
    fluxes = [2e5, 1e5]
    clean = _render(list(zip(positions, shapes, fluxes, strict=True))) + SKY
    image = _survey_image(rng.poisson(clean).astype(np.float64))
    catalog, draws = _network(positions, shapes, fluxes, rng)
    refined = _refined(image, catalog, draws)
    estimate = refined["fluxes"][0, :, 0].numpy()
    np.testing.assert_allclose(estimate, fluxes, rtol=0.04)


def test_faint_galaxies_stars_and_narrow_network_intervals_are_left_alone():
    rng = np.random.default_rng(7)
    position = np.array([[31.3, 32.6]])
    faint = 0.5 * GALAXY_SNR * np.sqrt(SKY * 4 * np.pi * (FWHM / SCALE / 2.355) ** 2)
    clean = _render([(position[0], SHAPE, faint)]) + SKY
    image = _survey_image(rng.poisson(clean).astype(np.float64))
    for flux, prob_galaxy in ((faint, 0.99), (2e5, 0.1)):
        catalog, draws = _network(position, SHAPE[None], [flux], rng, prob_galaxy)
        refined = _refined(image, catalog, draws)
        assert torch.equal(refined["fluxes"], catalog["fluxes"])
    # a network interval already narrower than the fit's is kept
    catalog, draws = _network(position, SHAPE[None], [2e5], rng)
    narrow = dict(catalog.items())
    narrow["fluxes@0.05"] = catalog["fluxes"] * 0.999
    narrow["fluxes@0.95"] = catalog["fluxes"] * 1.001
    narrow = FullCatalog(SIZE, SIZE, narrow)
    image = _survey_image(rng.poisson(_render([(position[0], SHAPE, 2e5)]) + SKY).astype(float))
    assert torch.equal(_refined(image, narrow, draws)["fluxes"], narrow["fluxes"])


@pytest.mark.parametrize("missing", ["prob_galaxy", "fluxes@0.05"])
def test_catalog_without_types_or_intervals_is_returned_as_is(missing):
    rng = np.random.default_rng(9)
    position = np.array([[31.3, 32.6]])
    image = _survey_image(rng.poisson(_render([(position[0], SHAPE, 2e5)]) + SKY).astype(float))
    catalog, draws = _network(position, SHAPE[None], [2e5], rng)
    reduced = FullCatalog(SIZE, SIZE, {k: v for k, v in catalog.items() if k != missing})
    assert _refined(image, reduced, draws) is reduced
