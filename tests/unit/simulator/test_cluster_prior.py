"""StarClusterPrior: its density profile and luminosity function against their definitions.

Statistical tolerances are 5 standard errors of the estimate at the sample size drawn.
"""

import math

import pytest
import torch

from bliss.errors import BlissConfigError
from bliss.simulator.cluster_prior import StarClusterPrior, king_profile

FLUX = {"min_nmgy": 0.5, "max_nmgy": 500.0, "alpha": 1.0}


def _ml_slope(flux: torch.Tensor) -> float:
    """Maximum-likelihood alpha of fluxes from a power law truncated to ``FLUX``'s range, on a
    0.001 grid over [0.3, 1.8]."""
    low, high = FLUX["min_nmgy"], FLUX["max_nmgy"]
    grid = torch.linspace(0.3, 1.8, 1501, dtype=torch.float64)
    n = flux.numel()
    log_like = (
        n * torch.log(grid)
        - (grid + 1) * flux.log().sum()
        - n * torch.log(low**-grid - high**-grid)
    )
    return float(grid[log_like.argmax()])


def _prior(**overrides) -> StarClusterPrior:
    settings = {
        "central_density_per_px2": [0.8, 0.8],
        "core_radius_px": [12.0, 12.0],
        "concentration": 1.0,
        "field_density_per_px2": 0.01,
        "center_offset_px": 0.0,
        "star_flux": FLUX,
    }
    settings.update(overrides)
    return StarClusterPrior(["g", "r"], "r", 0.396, star_colors=None, **settings)


def test_king_profile_is_one_at_the_centre_and_zero_from_the_tidal_radius():
    radius = torch.tensor([0.0, 5.0, 10.0, 99.0, 100.0, 150.0])
    king = king_profile(radius, torch.tensor(10.0), torch.tensor(100.0))
    assert king[0] == pytest.approx(1.0)
    assert king[-2:].tolist() == [0.0, 0.0]
    assert bool((king[1:] <= king[:-1]).all())
    # at r = rc: ((1/sqrt(2) - 1/sqrt(101)) / (1 - 1/sqrt(101)))^2
    edge = 1 / math.sqrt(101)
    assert float(king[2]) == pytest.approx(((2**-0.5 - edge) / (1 - edge)) ** 2, rel=1e-6)


def test_counts_follow_the_king_profile_around_the_centre():
    prior = _prior()
    n_tiles = 40  # 80 x 80 px, centre at (40, 40)
    catalog = prior.sample(200, n_tiles, n_tiles, torch.Generator().manual_seed(3))
    counts = catalog["n_sources"].double().mean(0)  # ht wt
    centers = (torch.arange(n_tiles) + 0.5) * 2
    radius = torch.hypot(centers.view(-1, 1) - 40, centers.view(1, -1) - 40)
    expected = 4 * (0.01 + 0.8 * king_profile(radius, torch.tensor(12.0), torch.tensor(120.0)))
    assert not bool((counts > prior.max_sources).any())
    for low, high in [(0, 4), (4, 12), (12, 24), (24, 40), (40, 60)]:
        ring = (radius >= low) & (radius < high)
        mean_expected = float(expected.double()[ring].mean())
        # Poisson counts truncated at 6: the truncation removes < 0.5 % of the mean at 3.2 per tile
        stderr = math.sqrt(mean_expected / (200 * int(ring.sum())))
        assert float(counts[ring].mean()) == pytest.approx(
            mean_expected, abs=5 * stderr + 0.005 * mean_expected
        )


def test_luminosity_function_is_the_configured_power_law():
    prior = _prior()
    catalog = prior.sample(100, 30, 30, torch.Generator().manual_seed(4))
    flux = catalog["fluxes"][..., 1][catalog.is_on_mask].double()
    n = flux.numel()
    assert n > 10_000
    assert float(flux.min()) >= FLUX["min_nmgy"] and float(flux.max()) <= FLUX["max_nmgy"]
    assert _ml_slope(flux) == pytest.approx(1.0, abs=5 / math.sqrt(n) + 0.002)
    assert not bool(catalog.galaxy_mask.any())


def test_the_centre_moves_within_its_offset():
    prior = _prior(center_offset_px=10.0, core_radius_px=[5.0, 50.0])
    center, density, core = prior.draw_clusters(500, 80, 80, torch.Generator().manual_seed(0))
    assert float((center - 40).abs().max()) <= 10.0
    assert 5.0 <= float(core.min()) and float(core.max()) <= 50.0
    # log-uniform: the median core radius is the geometric mean of the bounds
    assert float(core.median()) == pytest.approx(math.sqrt(5 * 50), rel=0.15)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"central_density_per_px2": [-0.1, 0.5]}, "central_density_per_px2"),
        ({"core_radius_px": [30.0, 10.0]}, "core_radius_px"),
        ({"field_density_per_px2": -1.0}, "field_density_per_px2"),
        ({"concentration": 0.0}, "concentration"),
        ({"max_sources": 2, "central_density_per_px2": [0.1, 1.0]}, "max_sources"),
    ],
)
def test_bad_parameters_name_their_key(overrides, key):
    with pytest.raises(BlissConfigError, match=key):
        _prior(**overrides)


def _fitted_slopes(catalog) -> torch.Tensor:
    """:func:`_ml_slope` of each image's r fluxes."""
    return torch.tensor(
        [
            _ml_slope(catalog["fluxes"][index, ..., 1][catalog.is_on_mask[index]].double())
            for index in range(catalog.batch_size)
        ]
    )


def test_a_slope_range_gives_each_image_its_own_luminosity_function():
    low, high = 0.6, 1.4
    prior = _prior(star_flux={**FLUX, "alpha": [low, high]})
    fitted = _fitted_slopes(prior.sample(60, 30, 30, torch.Generator().manual_seed(5)))
    # ~600 stars per image: each fit is good to ~1/sqrt(600) = 0.04, so the fits spread like the
    # drawn slopes (uniform: sd 0.8 / sqrt(12) = 0.23) and stay within the range but for that noise
    assert float(fitted.std()) == pytest.approx((high - low) / math.sqrt(12), rel=0.3)
    assert low - 0.15 < float(fitted.min()) and float(fitted.max()) < high + 0.15
    # one slope: the fits spread by their noise alone
    one = _fitted_slopes(_prior().sample(60, 30, 30, torch.Generator().manual_seed(5)))
    assert float(one.std()) < 0.08
    assert float(one.mean()) == pytest.approx(1.0, abs=0.03)


def test_a_bad_slope_range_names_its_key():
    with pytest.raises(BlissConfigError, match="star_flux.alpha"):
        _prior(star_flux={**FLUX, "alpha": [1.2, 0.8]})
