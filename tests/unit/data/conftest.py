"""A tiny one-band simulator and a helper that writes shards with it."""

from pathlib import Path

import pytest

from bliss.data.generate import generate_shards
from bliss.simulator.conditions import ObservingConditions
from bliss.simulator.prior import CatalogPrior
from bliss.simulator.render import GalsimRenderer
from bliss.simulator.simulate import ImageSimulator
from bliss.surveys import ParametricSurvey

RECIPE = {"survey": "toy", "image_size": 8, "density": 3000.0}


@pytest.fixture
def simulator() -> ImageSimulator:
    """8 x 8 px, one band, ~1.5 sources per image, Poisson noise (~25 ms per shard)."""
    survey = ParametricSurvey("toy", ["r"], "r", 0.396, 3.5, {"r": 1.3}, {"r": 100.0}, {"r": 28.0})
    prior = CatalogPrior(["r"], "r", 0.396, density_per_arcmin2=3000.0)
    return ImageSimulator(
        survey, prior, GalsimRenderer(), ObservingConditions(survey, "r"), image_size=8, margin_px=4
    )


def make_shards(simulator: ImageSimulator, directory: Path, **kwargs) -> dict:
    """``generate_shards`` with test defaults: seed 0, 3 shards of 2 images, no progress bar."""
    options = {
        "seed": 0,
        "n_shards": 3,
        "images_per_shard": 2,
        "recipe": RECIPE,
        "progress": False,
        **kwargs,
    }
    return generate_shards(simulator, directory, **options)
