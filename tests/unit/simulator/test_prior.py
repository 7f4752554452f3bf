"""CatalogPrior and ObservingConditions draws against their configured distributions.

Statistical tolerances are 5 standard errors of the estimate at the sample size drawn, so a
correct sampler fails with probability < 1e-6 per check (and never with the fixed seeds).
"""

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bliss.catalog import GALAXY_KEYS
from bliss.catalog.convert import nmgy_to_mag
from bliss.errors import BlissConfigError
from bliss.simulator.conditions import ObservingConditions
from bliss.simulator.prior import CatalogPrior
from bliss.surveys import ParametricSurvey
from tests.conftest import compose_config

PIXEL_SCALE = 0.396
TILE_SLEN = 4
TILE_AREA_ARCMIN2 = (TILE_SLEN * PIXEL_SCALE / 60) ** 2
N_IMAGES, N_TILES = 8, 64  # 32768 tiles per draw


@pytest.fixture(scope="module")
def prior_cfg():
    """The shipped prior config (SDSS bands), resolved to plain containers."""
    cfg = compose_config(["mode=generate"])
    return OmegaConf.to_container(cfg.prior, resolve=True)


def _prior(prior_cfg, **overrides) -> CatalogPrior:
    return instantiate({**prior_cfg, **overrides})


def _draw(prior: CatalogPrior, seed: int = 0):
    return prior.sample(N_IMAGES, N_TILES, N_TILES, torch.Generator().manual_seed(seed))


def _density(mean_per_tile: float) -> float:
    return mean_per_tile / TILE_AREA_ARCMIN2


@pytest.mark.parametrize("mean_per_tile", [0.05, 0.7])
def test_mean_count_per_tile_is_poisson_mean(prior_cfg, mean_per_tile):
    # max_sources 10 truncates P(N > 10) < 1e-9 of the Poisson mass
    prior = _prior(prior_cfg, density_per_arcmin2=_density(mean_per_tile), max_sources=10)
    assert prior.mean_sources_per_tile == pytest.approx(mean_per_tile, rel=1e-9)
    counts = _draw(prior)["n_sources"].double()
    n_tiles = counts.numel()
    # Poisson: the sample mean has standard error sqrt(lambda / n_tiles)
    assert float(counts.mean()) == pytest.approx(
        mean_per_tile, abs=5 * math.sqrt(mean_per_tile / n_tiles)
    )
    # variance equals mean; var(s^2) ~ (lambda + 2 lambda^2) / n for a Poisson
    spread = 5 * math.sqrt((mean_per_tile + 2 * mean_per_tile**2) / n_tiles)
    assert float(counts.var()) == pytest.approx(mean_per_tile, abs=spread)


def test_counts_above_max_sources_are_clipped(prior_cfg):
    mean_per_tile = 0.7
    prior = _prior(prior_cfg, density_per_arcmin2=_density(mean_per_tile), max_sources=1)
    counts = _draw(prior)["n_sources"].double()
    occupied = 1 - math.exp(-mean_per_tile)  # P(N >= 1), Bernoulli standard error below
    assert counts.max() == 1
    assert float(counts.mean()) == pytest.approx(
        occupied, abs=5 * math.sqrt(occupied * (1 - occupied) / counts.numel())
    )


@pytest.mark.parametrize("prob_galaxy,flux_key", [(0.0, "star_flux"), (1.0, "galaxy_flux")])
def test_power_law_index_is_recovered(prior_cfg, prob_galaxy, flux_key):
    alpha, min_nmgy = 0.7, 2.0
    # max / min = 5e11: the truncated tail holds (5e11)^-0.7 ~ 1e-8 of the mass, negligible
    spec = {"min_nmgy": min_nmgy, "max_nmgy": 1e12, "alpha": alpha}
    prior = _prior(
        prior_cfg, density_per_arcmin2=_density(8.0), prob_galaxy=prob_galaxy, **{flux_key: spec}
    )
    catalog = _draw(prior)
    on = catalog.is_on_mask
    ref_flux = catalog["fluxes"][..., prior.reference_index][on].double()
    n = ref_flux.numel()
    assert n > 30_000
    assert float(ref_flux.min()) >= min_nmgy * (1 - 1e-6)  # float32 rounding of min_nmgy
    assert float(ref_flux.max()) <= 1e12
    # Pareto MLE; its standard error is alpha / sqrt(n)
    alpha_hat = n / float(torch.log(ref_flux / min_nmgy).sum())
    assert alpha_hat == pytest.approx(alpha, abs=5 * alpha / math.sqrt(n))


def test_fluxes_stay_inside_the_truncation(prior_cfg):
    spec = {"min_nmgy": 1.0, "max_nmgy": 3.0, "alpha": 0.5}
    prior = _prior(prior_cfg, density_per_arcmin2=_density(2.0), star_flux=spec, galaxy_flux=spec)
    catalog = _draw(prior)
    ref_flux = catalog["fluxes"][..., prior.reference_index][catalog.is_on_mask]
    assert float(ref_flux.min()) >= 1.0 - 1e-6
    assert float(ref_flux.max()) <= 3.0 + 1e-6
    # inverse CDF: P(F < 1.5) = (1 - 1.5^-a) / (1 - 3^-a), Bernoulli standard error
    p_low = (1 - 1.5**-0.5) / (1 - 3**-0.5)
    frac_low = float((ref_flux < 1.5).double().mean())
    assert frac_low == pytest.approx(p_low, abs=5 * math.sqrt(p_low * (1 - p_low) / len(ref_flux)))


def test_galaxy_fraction_and_uniform_locations(prior_cfg):
    prob_galaxy = 0.3
    prior = _prior(prior_cfg, density_per_arcmin2=_density(8.0), prob_galaxy=prob_galaxy)
    catalog = _draw(prior)
    on = catalog.is_on_mask
    n = int(on.sum())
    fraction = float(catalog.galaxy_mask.sum()) / n
    assert fraction == pytest.approx(
        prob_galaxy, abs=5 * math.sqrt(prob_galaxy * (1 - prob_galaxy) / n)
    )

    locs = catalog["locs"][on].double()
    assert float(locs.min()) >= 0.0 and float(locs.max()) < 1.0
    # U(0, 1): mean 1/2 with standard error sqrt(1/12/n); each decile holds 1/10 of the draws
    torch.testing.assert_close(
        locs.mean(0),
        torch.full((2,), 0.5, dtype=torch.float64),
        atol=5 * math.sqrt(1 / 12 / n),
        rtol=0,
    )
    for axis in range(2):
        counts = torch.histc(locs[:, axis], bins=10, min=0.0, max=1.0) / n
        assert float((counts - 0.1).abs().max()) < 5 * math.sqrt(0.1 * 0.9 / n)


def test_star_colours_match_the_configured_means(prior_cfg):
    prior = _prior(prior_cfg, density_per_arcmin2=_density(8.0), prob_galaxy=0.0)
    catalog = _draw(prior)
    fluxes = catalog["fluxes"][catalog.is_on_mask].double()
    n = fluxes.shape[0]
    mags = nmgy_to_mag(fluxes)
    colours = mags - mags[:, [prior.reference_index]]
    colors_cfg = prior_cfg["star_colors"]
    for index, band in enumerate(prior.bands):
        mean, slope, scatter = (colors_cfg[part][band] for part in ("mean", "slope", "scatter"))
        # colour = mean + slope * t + scatter * eps has standard deviation hypot(slope, scatter):
        # the sample mean's standard error is that / sqrt(n) (+ 1e-6 for float32 magnitudes)
        std = math.hypot(slope, scatter)
        tolerance = 5 * std / math.sqrt(n) + 1e-6
        assert float(colours[:, index].mean()) == pytest.approx(mean, abs=tolerance), band
        if std:
            # a Gaussian's sample standard deviation has relative standard error 1 / sqrt(2 n)
            measured = float(colours[:, index].std())
            assert measured == pytest.approx(std, rel=5 / math.sqrt(2 * n)), band


def test_galaxy_shapes_are_inside_their_bounds_and_stars_have_none(prior_cfg):
    prior = _prior(prior_cfg, density_per_arcmin2=_density(8.0), prob_galaxy=0.5, max_sources=2)
    catalog = _draw(prior)
    galaxies, stars = catalog.galaxy_mask, catalog.star_mask
    shape_cfg = prior_cfg["galaxy_shape"]
    q_min = shape_cfg["q_min"]
    bounds = {
        "disk_frac": (0.0, 1.0),
        "beta_rad": (0.0, math.pi),
        "disk_q": (q_min, 1.0),
        "bulge_q": (q_min, 1.0),
        **{
            key: (shape_cfg[key]["min"], shape_cfg[key]["max"])
            for key in ("disk_hlr_arcsec", "bulge_hlr_arcsec")
        },
    }
    for key, (low, high) in bounds.items():
        values = catalog[key][galaxies]
        assert float(values.min()) >= low - 1e-6 and float(values.max()) <= high + 1e-6, key
        assert float(catalog[key][stars].abs().max()) == 0.0, key
    assert float(catalog["beta_rad"][galaxies].max()) < math.pi
    # log-normal radii: the median is the configured median (clipping keeps it); the log of the
    # sample median has standard error sigma * sqrt(pi / 2 / n)
    n = int(galaxies.sum())
    for key in ("disk_hlr_arcsec", "bulge_hlr_arcsec"):
        spec = shape_cfg[key]
        median = float(catalog[key][galaxies].median())
        tolerance = 5 * spec["sigma"] * math.sqrt(math.pi / 2 / n)
        assert math.log(median) == pytest.approx(math.log(spec["median"]), abs=tolerance), key
    assert float(catalog["source_type"][stars].abs().max()) == 0.0
    assert bool((catalog["source_type"][galaxies] == 1.0).all())


def test_empty_slots_are_zero_and_slots_sorted_by_reference_flux(prior_cfg):
    prior = _prior(prior_cfg, density_per_arcmin2=_density(2.0), max_sources=3)
    catalog = _draw(prior)
    off = ~catalog.is_on_mask
    for key in catalog.keys():
        if key != "n_sources":
            assert float(catalog[key][off].abs().max()) == 0.0, key
    ref_flux = catalog["fluxes"][..., prior.reference_index]
    assert bool((ref_flux[..., :-1] >= ref_flux[..., 1:]).all())
    assert int((catalog["n_sources"] == 3).sum()) > 100  # the ordering was exercised


def test_corner_fraction_puts_that_share_at_the_four_corners(prior_cfg):
    share, corner_px = 0.2, 0.05
    prior = _prior(
        prior_cfg, density_per_arcmin2=_density(0.7), corner_fraction=share, corner_px=corner_px
    )
    catalog = _draw(prior)
    locs = catalog["locs"][catalog.is_on_mask].double()
    n = len(locs)
    assert float(locs.min()) >= 0.0 and float(locs.max()) < 1.0
    to_edge = torch.minimum(locs, 1 - locs) * TILE_SLEN  # px from the nearest edge, per axis
    near = (to_edge <= corner_px).all(-1)
    # uniform sources land that close with probability (2 * 0.05 / 4)^2 = 6e-4
    expected = share + (1 - share) * (2 * corner_px / TILE_SLEN) ** 2
    assert float(near.double().mean()) == pytest.approx(
        expected, abs=5 * math.sqrt(expected * (1 - expected) / n)
    )
    # each of the four corners takes a quarter of them
    corners = (locs[near] > 0.5).long() @ torch.tensor([2, 1])
    quarters = torch.bincount(corners, minlength=4).double() / int(near.sum())
    assert float((quarters - 0.25).abs().max()) < 5 * math.sqrt(0.25 * 0.75 / int(near.sum()))


def test_same_seed_gives_identical_draws(prior_cfg):
    prior = _prior(prior_cfg, density_per_arcmin2=_density(1.0), max_sources=2)
    first = prior.sample(2, 8, 8, torch.Generator().manual_seed(7))
    again = prior.sample(2, 8, 8, torch.Generator().manual_seed(7))
    other = prior.sample(2, 8, 8, torch.Generator().manual_seed(8))
    for key in first.keys():
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["locs"], other["locs"])


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"density_per_arcmin2": -1.0}, "prior.density_per_arcmin2"),
        ({"max_sources": 0}, "prior.max_sources"),
        ({"prob_galaxy": 1.5}, "prior.prob_galaxy"),
        ({"tile_slen": 0}, "prior.tile_slen"),
        ({"reference_band": "q"}, "prior.reference_band"),
        ({"star_flux": {"min_nmgy": 5.0, "max_nmgy": 5.0, "alpha": 0.5}}, "prior.star_flux"),
        ({"galaxy_flux": {"min_nmgy": 9.0, "max_nmgy": 1.0, "alpha": 0.5}}, "prior.galaxy_flux"),
        ({"star_flux": {"min_nmgy": 1.0, "max_nmgy": 9.0, "alpha": -0.5}}, "prior.star_flux.alpha"),
        ({"galaxy_shape": {"q_min": 0.0}}, "prior.galaxy_shape.q_min"),
        ({"galaxy_shape": {"disk_frac": [0.8, 0.2]}}, "prior.galaxy_shape.disk_frac"),
        ({"corner_fraction": 1.5}, "prior.corner_fraction"),
        ({"corner_px": 0.0}, "prior.corner_px"),
    ],
)
def test_bad_values_raise_config_errors_naming_the_key(prior_cfg, overrides, key):
    with pytest.raises(BlissConfigError, match=key.replace(".", r"\.")):
        CatalogPrior(**{**_plain(prior_cfg), **overrides})


def test_missing_colour_for_a_band_names_the_band(prior_cfg):
    colors = {part: dict(values) for part, values in prior_cfg["star_colors"].items()}
    del colors["mean"]["g"]
    with pytest.raises(BlissConfigError, match=r"prior\.star_colors\.mean.*'g'"):
        CatalogPrior(**{**_plain(prior_cfg), "star_colors": colors})


def _plain(prior_cfg) -> dict:
    return {k: v for k, v in prior_cfg.items() if k != "_target_"}


# ---- observing conditions ---------------------------------------------------------------------


@pytest.fixture
def survey() -> ParametricSurvey:
    return ParametricSurvey(
        "toy",
        ["g", "r", "i"],
        "r",
        PIXEL_SCALE,
        3.5,
        {"g": 1.4, "r": 1.3, "i": 1.2},
        {"g": 254.0, "r": 620.0, "i": 977.0},
        {"g": 29.82, "r": 29.89, "i": 29.69},
    )


N_CONDITIONS = 2000


def _conditions(survey, **ranges):
    draws = ObservingConditions(survey, "r", **ranges).sample(
        N_CONDITIONS, torch.Generator().manual_seed(0)
    )
    nominal_fwhm = torch.tensor([1.4, 1.3, 1.2])
    nominal_sky = torch.tensor([254.0, 620.0, 977.0])
    return draws["psf_fwhm_arcsec"], draws["sky_electrons"], nominal_fwhm, nominal_sky


def test_nominal_conditions_without_ranges(survey):
    fwhm, sky, nominal_fwhm, nominal_sky = _conditions(survey)
    assert fwhm.shape == sky.shape == (N_CONDITIONS, 3)
    assert torch.equal(fwhm, nominal_fwhm.expand_as(fwhm))
    assert torch.equal(sky, nominal_sky.expand_as(sky))


def test_scale_ranges_are_respected_and_band_ratios_kept(survey):
    fwhm, sky, nominal_fwhm, nominal_sky = _conditions(
        survey, fwhm_scale=[0.8, 1.2], sky_scale=[0.5, 1.5]
    )
    fwhm_factor, sky_factor = fwhm / nominal_fwhm, sky / nominal_sky
    for factor, (low, high) in ((fwhm_factor, (0.8, 1.2)), (sky_factor, (0.5, 1.5))):
        assert float(factor.min()) >= low - 1e-6 and float(factor.max()) <= high + 1e-6
        # one factor per image, shared by every band
        torch.testing.assert_close(factor, factor[:, :1].expand_as(factor))
        # the draws fill the range: P(no draw in the lowest tenth) = 0.9^2000
        assert float(factor.min()) < low + 0.1 * (high - low)
        assert float(factor.max()) > high - 0.1 * (high - low)
    assert not torch.allclose(fwhm_factor[:, 0], sky_factor[:, 0])  # independent draws


def test_reference_fwhm_range_for_the_reference_band(survey):
    fwhm, _, nominal_fwhm, _ = _conditions(survey, reference_fwhm_arcsec=[1.0, 2.0])
    reference = fwhm[:, 1]
    assert float(reference.min()) >= 1.0 - 1e-6 and float(reference.max()) <= 2.0 + 1e-6
    assert float(reference.min()) < 1.1 and float(reference.max()) > 1.9
    # uniform on [1, 2]: mean 1.5 with standard error sqrt(1/12/n)
    assert float(reference.mean()) == pytest.approx(1.5, abs=5 * math.sqrt(1 / 12 / N_CONDITIONS))
    ratios = fwhm / fwhm[:, 1:2]
    torch.testing.assert_close(ratios, (nominal_fwhm / nominal_fwhm[1]).expand_as(ratios))


def test_both_fwhm_options_are_rejected(survey):
    with pytest.raises(BlissConfigError, match="reference_fwhm_arcsec.*fwhm_scale"):
        ObservingConditions(survey, "r", reference_fwhm_arcsec=[1.0, 2.0], fwhm_scale=[0.9, 1.1])


@pytest.mark.parametrize(
    "ranges,key",
    [
        ({"sky_scale": [1.5, 0.5]}, "sky_scale"),
        ({"fwhm_scale": [0.0, 1.0]}, "fwhm_scale"),
        ({"reference_fwhm_arcsec": [1.0]}, "reference_fwhm_arcsec"),
    ],
)
def test_bad_ranges_name_the_key(survey, ranges, key):
    with pytest.raises(BlissConfigError, match=f"simulator.conditions.{key}"):
        ObservingConditions(survey, "r", **ranges)


def test_unknown_reference_band_is_a_config_error(survey):
    with pytest.raises(BlissConfigError, match="reference_band"):
        ObservingConditions(survey, "u")


def test_galaxy_keys_are_all_drawn(prior_cfg):
    catalog = _prior(prior_cfg).sample(1, 2, 2, torch.Generator().manual_seed(0))
    assert set(GALAXY_KEYS) <= set(catalog.keys())


def test_disk_fraction_range_is_respected(prior_cfg):
    shape = {**prior_cfg["galaxy_shape"], "disk_frac": [0.7, 0.9]}
    prior = _prior(
        prior_cfg, density_per_arcmin2=_density(8.0), prob_galaxy=1.0, galaxy_shape=shape
    )
    catalog = _draw(prior)
    values = catalog["disk_frac"][catalog.galaxy_mask]
    assert float(values.min()) >= 0.7 and float(values.max()) <= 0.9
    # uniform on [0.7, 0.9]: mean 0.8, standard error 0.2 / sqrt(12 n)
    assert float(values.mean()) == pytest.approx(0.8, abs=5 * 0.2 / math.sqrt(12 * values.numel()))


# ---- galaxy shapes from a catalog of real galaxies ----------------------------------------------

_STUB_SHAPES = {
    "disk_frac": 0.625,
    "beta_rad": 1.25,
    "disk_q": 0.37,
    "disk_hlr_arcsec": 0.9,
    "bulge_q": 0.61,
}


class _RecordingShapes:
    """A ``GalaxyShapeCatalog`` with fixed shapes, except ``bulge_hlr_arcsec = ref_mag / 100``.

    That one value ties every galaxy's shape to the magnitude it was drawn for, so the test sees
    whether shapes reach the right galaxy through the slot sorting.
    """

    def __init__(self) -> None:
        self.received: list[torch.Tensor] = []

    def sample(self, ref_mag: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        self.received.append(ref_mag.clone())
        shapes = {key: torch.full((len(ref_mag), 1), value) for key, value in _STUB_SHAPES.items()}
        return {**shapes, "bulge_hlr_arcsec": ref_mag[:, None] / 100}


def test_galaxy_shape_catalog_gives_galaxies_its_shapes_for_their_magnitudes(prior_cfg):
    stub = _RecordingShapes()
    prior = _prior(
        prior_cfg,
        density_per_arcmin2=_density(2.0),
        prob_galaxy=0.5,
        max_sources=3,
        galaxy_shape_catalog=stub,
    )
    catalog = prior.sample(4, 16, 16, torch.Generator().manual_seed(0))
    galaxies, stars = catalog.galaxy_mask, catalog.star_mask
    assert int(galaxies.sum()) > 500 and int(stars.sum()) > 500
    assert int((catalog["n_sources"] > 1).sum()) > 100  # the slot sorting was exercised
    for key, value in _STUB_SHAPES.items():
        assert bool((catalog[key][galaxies] == value).all()), key
    for key in GALAXY_KEYS:
        assert float(catalog[key][stars].abs().max()) == 0.0, key

    ref_mag = 22.5 - 2.5 * torch.log10(catalog["fluxes"][..., prior.reference_index])
    galaxy_mag = ref_mag[galaxies]
    torch.testing.assert_close(catalog["bulge_hlr_arcsec"][galaxies][:, 0], galaxy_mag / 100)
    # one call, holding every galaxy's reference magnitude (stars' may come along, masked out)
    assert len(stub.received) == 1
    received = stub.received[0]
    assert len(galaxy_mag) <= len(received) <= int(catalog.is_on_mask.sum())
    nearest = (received[None, :] - galaxy_mag[:, None]).abs().min(-1).values
    assert float(nearest.max()) < 1e-5
