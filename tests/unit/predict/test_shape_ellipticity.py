"""Ellipticities from the shape factors' posterior: known answers for sure and unsure orientations."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bliss.catalog import FullCatalog
from bliss.catalog.ellipticity import galaxy_ellipticity
from bliss.catalog.tile import GALAXY_KEYS
from bliss.posterior.factors import (
    LogitNormalFactor,
    LogNormalFactor,
    NormalFactor,
    PositionAngleFactor,
)
from bliss.predict.shape_ellipticity import (
    N_DRAWS,
    add_drawn_ellipticity,
    add_shape_ellipticity,
    drop_shape_parameters,
    shape_draws,
    shape_parameter_columns,
)

FACTORS = {
    "disk_frac": LogitNormalFactor("disk_frac", gate="galaxy"),
    "beta_rad": PositionAngleFactor("beta_rad"),
    "disk_q": LogitNormalFactor("disk_q", gate="galaxy"),
    "disk_hlr_arcsec": LogNormalFactor("disk_hlr_arcsec", gate="galaxy"),
    "bulge_q": LogitNormalFactor("bulge_q", gate="galaxy"),
    "bulge_hlr_arcsec": LogNormalFactor("bulge_hlr_arcsec", gate="galaxy"),
}
POSTERIOR = SimpleNamespace(slot_factors=FACTORS)
NARROW = -12.0  # raw scale: softplus(-12) ~ 6e-6, plus the 1e-3 floor


def _raw(beta: float, kappa_raw: float) -> dict[str, torch.Tensor]:
    """Raw parameters of one galaxy: a q = 0.5, 1 arcsec disk (disk share ~1) at angle ``beta``."""
    return {
        "disk_frac": torch.tensor([8.0, NARROW]),  # logit 8: share 0.9997
        "beta_rad": torch.tensor([math.cos(2 * beta), math.sin(2 * beta), kappa_raw]),
        "disk_q": torch.tensor([0.0, NARROW]),  # logit 0: q = 0.5
        "disk_hlr_arcsec": torch.tensor([0.0, NARROW]),  # log 0: 1 arcsec
        "bulge_q": torch.tensor([0.0, NARROW]),
        "bulge_hlr_arcsec": torch.tensor([-1.0, NARROW]),
    }


def _catalog(galaxies: list[dict[str, torch.Tensor]]) -> FullCatalog:
    n = len(galaxies)
    split = {name: torch.stack([g[name] for g in galaxies])[None] for name in FACTORS}
    columns = shape_parameter_columns(POSTERIOR, split)
    assert len(columns) == len(GALAXY_KEYS)
    data = {"n_sources": torch.tensor([n]), "plocs": torch.rand(1, n, 2) * 10, **columns}
    return FullCatalog(10, 10, data)


def test_a_sure_orientation_gives_the_ellipticity_of_the_shape() -> None:
    beta = 0.3
    catalog = add_shape_ellipticity(_catalog([_raw(beta, 1e4)]), POSTERIOR, (0.05, 0.95))
    expected = galaxy_ellipticity([[0.9997, beta, 0.5, 1.0, 0.5, math.exp(-1.0)]])[0]
    # kappa = 1e4 on the doubled angle: beta's sd is 0.005 rad, negligible
    np.testing.assert_allclose(catalog["ellipticity"][0, 0].numpy(), expected, atol=2e-3)
    assert not any(k.startswith("shape_params") for k in drop_shape_parameters(catalog).keys())
    lo, hi = catalog["ellipticity@0.05"][0, 0], catalog["ellipticity@0.95"][0, 0]
    assert bool(
        (lo <= catalog["ellipticity"][0, 0]).all() and (catalog["ellipticity"][0, 0] <= hi).all()
    )


def test_an_unknown_orientation_shrinks_the_ellipticity_to_zero() -> None:
    galaxies = [_raw(0.0, -20.0) for _ in range(200)]  # kappa ~ 1e-3: beta uniform
    catalog = add_shape_ellipticity(_catalog(galaxies), POSTERIOR, (0.05, 0.95))
    e = catalog["ellipticity"][0].numpy()
    # the point estimates say |e| = 1/3 along beta = 0 for every galaxy
    point = galaxy_ellipticity([[0.9997, 0.0, 0.5, 1.0, 0.5, math.exp(-1.0)]])[0]
    assert point[0] == pytest.approx(1 / 3, abs=0.01)
    # e1 = cos(2 beta) / 3 with beta uniform has median 0 and sd 0.24; the median of 64 draws
    # scatters by ~1.25 x 0.24 / 8 = 0.04 per galaxy, so the mean of 200 by ~0.003
    assert abs(float(np.mean(e[:, 0]))) < 0.02 and abs(float(np.mean(e[:, 1]))) < 0.02
    assert float(np.std(e[:, 0])) < 0.08
    width = catalog["ellipticity@0.95"][0, :, 0] - catalog["ellipticity@0.05"][0, :, 0]
    assert float(width.min()) > 0.5  # the interval spans most of [-1/3, 1/3]


def test_draws_are_seeded_and_leave_the_global_stream_alone() -> None:
    catalog = _catalog([_raw(0.0, -20.0), _raw(1.0, 0.0)])
    torch.manual_seed(7)
    first = add_shape_ellipticity(catalog, POSTERIOR, (0.05,))
    after = torch.rand(3)
    torch.manual_seed(7)
    expected_after = torch.rand(3)
    second = add_shape_ellipticity(catalog, POSTERIOR, (0.05,))
    torch.testing.assert_close(first["ellipticity"], second["ellipticity"])
    torch.testing.assert_close(after, expected_after)


def test_models_with_their_own_ellipticity_factor_keep_it() -> None:
    factors = {**FACTORS, "ellipticity": NormalFactor("ellipticity", dim=2)}
    split = {name: torch.zeros(1, 1, 3) for name in factors}
    # the shape parameters are still given (galaxy model photometry draws from them) ...
    columns = shape_parameter_columns(SimpleNamespace(slot_factors=factors), split)
    assert sorted(columns) == sorted(f"shape_params:{k}" for k in GALAXY_KEYS)
    missing = {k: v for k, v in FACTORS.items() if k != "bulge_q"}
    assert shape_parameter_columns(SimpleNamespace(slot_factors=missing), split) == {}
    # ... but the factor's ellipticity is not replaced
    catalog = _catalog([_raw(0.3, 1e4)])
    own = FullCatalog(10, 10, {**dict(catalog.items()), "ellipticity": torch.full((1, 1, 2), 0.7)})
    assert add_shape_ellipticity(own, POSTERIOR, (0.05,)) is own


def test_an_empty_catalog_gets_empty_columns() -> None:
    catalog = FullCatalog(
        10,
        10,
        {
            "n_sources": torch.tensor([0]),
            "plocs": torch.zeros(1, 0, 2),
            **{f"shape_params:{k}": torch.zeros(1, 0, 2) for k in GALAXY_KEYS},
        },
    )
    out = add_shape_ellipticity(catalog, POSTERIOR, (0.05,))
    assert out["ellipticity"].shape == (1, 0, 2) and "ellipticity@0.05" in out
    assert shape_draws(catalog, POSTERIOR).shape == (N_DRAWS, 0, len(GALAXY_KEYS))


def test_a_sample_gets_the_ellipticity_of_its_drawn_shapes() -> None:
    shapes = torch.tensor([[1.0, 0.3, 0.5, 1.0, 0.5, 0.4], [0.2, 2.0, 0.8, 0.6, 0.3, 0.3]])
    data = {"n_sources": torch.tensor([2]), "plocs": torch.rand(1, 2, 2)}
    data.update({k: shapes[None, :, i : i + 1] for i, k in enumerate(GALAXY_KEYS)})
    sample = add_drawn_ellipticity(FullCatalog(10, 10, data))
    np.testing.assert_allclose(
        sample["ellipticity"][0].numpy(), galaxy_ellipticity(shapes.numpy()), rtol=1e-5
    )
