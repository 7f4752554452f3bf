"""Fixtures shared by the predict tests."""

import pytest
import torch
from hydra.utils import instantiate

from bliss.posterior.factors import NormalFactor
from bliss.posterior.regions import RegionFactor
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def region_encoder(tmp_path_factory):
    """The debug encoder (untrained) with an image-level shear and a 16 px convergence map."""
    cfg = compose_config(["mode=predict", "experiment=debug"], tmp_path_factory.mktemp("cfg"))
    torch.manual_seed(3)
    regions = {
        "shear": RegionFactor(NormalFactor("shear", dim=2)),
        "kappa": RegionFactor(NormalFactor("convergence_map", dim=1), region_px=16),
    }
    return instantiate(cfg.encoder, regions=regions).eval()
