"""ImageSimulator: sky level, noise statistics, flux conservation, reproducibility, validation."""

import math

import numpy as np
import pytest
import torch

from bliss.catalog import GALAXY_KEYS, TileCatalog
from bliss.errors import BlissConfigError
from bliss.simulator.conditions import ObservingConditions
from bliss.simulator.prior import CatalogPrior
from bliss.simulator.render import GalsimRenderer
from bliss.simulator.simulate import ImageSimulator
from bliss.surveys import ParametricSurvey

BANDS = ("g", "r")
MAGZERO = {"g": 29.82, "r": 29.89}
SKY = {"g": 254.0, "r": 620.0}
PIXEL_SCALE = 0.396
TILE_SLEN = 4


def _survey() -> ParametricSurvey:
    return ParametricSurvey("toy", BANDS, "r", PIXEL_SCALE, 3.5, {"g": 1.4, "r": 1.3}, SKY, MAGZERO)


def _prior(density: float = 0.0, bands: tuple[str, ...] = BANDS) -> CatalogPrior:
    colors = {
        "mean": {"g": 0.5, "i": 0.1},
        "slope": {"g": 0.3, "i": 0.1},
        "scatter": {"g": 0.05, "i": 0.05},
    }
    return CatalogPrior(
        bands,
        "r",
        PIXEL_SCALE,
        tile_slen=TILE_SLEN,
        density_per_arcmin2=density,
        star_colors=colors,
        galaxy_colors=colors,
    )


def _simulator(noise: str = "none", density: float = 0.0, image_size: int = 32) -> ImageSimulator:
    survey = _survey()
    return ImageSimulator(
        survey,
        _prior(density),
        GalsimRenderer(),
        ObservingConditions(survey, "r"),
        image_size=image_size,
        noise=noise,
    )


def test_empty_noise_free_image_equals_the_sky_exactly():
    out = _simulator("none").simulate(3, seed=0)
    images = out["images"]
    assert images.shape == (3, 2, 32, 32)
    expected = torch.tensor([SKY[b] for b in BANDS]).view(1, 2, 1, 1).expand_as(images)
    assert torch.equal(images, expected)
    assert torch.equal(out["background"], torch.tensor([[SKY[b] for b in BANDS]] * 3))
    assert int(out["catalog"]["n_sources"].sum()) == 0


@pytest.mark.parametrize("noise", ["poisson", "gaussian"])
def test_noise_variance_equals_mean_on_an_empty_image(noise):
    images = _simulator(noise, image_size=64).simulate(4, seed=1)["images"].double()
    for index, band in enumerate(BANDS):
        pixels = images[:, index].flatten()
        n, sky = pixels.numel(), SKY[band]  # 16384 pixels per band
        # sample mean: standard error sqrt(sky / n)
        assert float(pixels.mean()) == pytest.approx(sky, abs=5 * math.sqrt(sky / n))
        # sample variance: var(s^2) ~ (mu4 - sigma^4) / n = (sky + 2 sky^2) / n for a Poisson
        assert float(pixels.var()) == pytest.approx(sky, abs=5 * math.sqrt((sky + 2 * sky**2) / n))
        if noise == "poisson":
            assert torch.equal(pixels, pixels.round())


def _one_source_catalog(n_padded: int, is_galaxy: bool, fluxes: list[float]) -> TileCatalog:
    """A padded tile catalog with one source in the centre tile (the prior's output layout)."""
    shape = (1, n_padded, n_padded, 1)
    data = {key: torch.zeros(*shape, 1) for key in ("source_type", *GALAXY_KEYS)}
    data["n_sources"] = torch.zeros(shape[:3], dtype=torch.long)
    data["locs"] = torch.zeros(*shape, 2)
    data["fluxes"] = torch.zeros(*shape, len(fluxes))
    centre = n_padded // 2
    data["n_sources"][0, centre, centre] = 1
    data["locs"][0, centre, centre, 0] = torch.tensor([0.3, 0.6])
    data["fluxes"][0, centre, centre, 0] = torch.tensor(fluxes)
    if is_galaxy:
        params = dict(zip(GALAXY_KEYS, [0.6, 0.4, 0.5, 0.8, 0.7, 0.4], strict=True))
        data["source_type"][0, centre, centre, 0] = 1.0
        for key, value in params.items():
            data[key][0, centre, centre, 0] = value
    return TileCatalog(TILE_SLEN, data)


@pytest.mark.parametrize("is_galaxy", [False, True], ids=["star", "galaxy"])
def test_one_source_image_sums_to_its_flux_in_electrons(monkeypatch, is_galaxy):
    simulator = _simulator("none", image_size=48)
    fluxes_nmgy = [20.0, 50.0]

    def one_source(n_images, n_tiles_h, n_tiles_w, generator):
        assert n_images == 1 and n_tiles_h == n_tiles_w
        return _one_source_catalog(n_tiles_h, is_galaxy, fluxes_nmgy)

    monkeypatch.setattr(simulator.prior, "sample", one_source)
    out = simulator.simulate(1, seed=0)

    assert int(out["catalog"]["n_sources"].sum()) == 1  # the centre tile is inside the image
    light = out["images"][0].double() - out["background"][0].double().view(2, 1, 1)
    for index, band in enumerate(BANDS):
        electrons = fluxes_nmgy[index] * 10 ** (0.4 * (MAGZERO[band] - 22.5))
        # the source is >= 20 px (6 FWHM) from every edge: a Moffat(3.5) star loses < 1e-4
        # outside the image and the galaxy's de Vaucouleurs wings about 2e-3, well inside 1%
        assert float(light[index].sum()) == pytest.approx(electrons, rel=0.01), band
        assert float(light[index].min()) > -1e-3 * electrons  # no negative light beyond round-off


def test_same_seed_gives_byte_identical_images():
    simulator = _simulator("poisson", density=2000.0, image_size=16)
    first = simulator.simulate(2, seed=5)
    again = simulator.simulate(2, seed=5)
    other = simulator.simulate(2, seed=6)
    assert int(first["catalog"]["n_sources"].sum()) > 0
    assert first["images"].numpy().tobytes() == again["images"].numpy().tobytes()
    for key in first["catalog"].keys():
        assert torch.equal(first["catalog"][key], again["catalog"][key]), key
    assert not np.array_equal(first["images"].numpy(), other["images"].numpy())


def test_image_size_must_be_a_multiple_of_the_tile_size():
    with pytest.raises(BlissConfigError, match=r"simulator\.image_size=18.*prior\.tile_slen=4"):
        _simulator(image_size=18)


def test_prior_bands_must_match_the_survey_bands():
    survey = _survey()
    with pytest.raises(BlissConfigError, match=r"prior\.bands.*survey\.bands"):
        ImageSimulator(
            survey,
            _prior(bands=("g", "r", "i")),
            GalsimRenderer(),
            ObservingConditions(survey, "r"),
            image_size=16,
        )


def test_unknown_noise_model_names_the_key():
    with pytest.raises(BlissConfigError, match=r"simulator\.noise"):
        _simulator(noise="laplace")
