"""Coverage per bin and type on synthetic Gaussian posteriors whose answer is known."""

import math

import pytest
import torch
from torch.distributions import Normal

from bliss.catalog import FullCatalog
from bliss.catalog.convert import mag_to_nmgy
from bliss.errors import BlissValueError
from bliss.metrics.calibration import (
    binned_coverage,
    format_binned_coverage,
    format_profile_bias,
    interval_hits,
    level_quantiles,
    profile_bias,
    reliability,
)

N = 4000
BANDS = ("g", "r")
LEVELS = (0.2, 0.5, 0.9)
QUANTILES = sorted({q for level in LEVELS for q in level_quantiles(level)})


def _catalogs(width_factor: dict[int, float], seed: int = 0):
    """One image of ``N`` sources; estimates scattered by N(0, sigma), intervals of
    ``width_factor[type] * sigma``: calibrated where the factor is 1."""
    gen = torch.Generator().manual_seed(seed)
    mag = 16 + 7 * torch.rand(N, generator=gen)
    kind = (torch.arange(N) % 2).float()
    true_flux = torch.stack([mag_to_nmgy(mag + 0.3), mag_to_nmgy(mag)], -1)
    flux_sigma = 0.05 * true_flux
    plocs = 1000 * torch.rand(N, 2, generator=gen)
    loc_sigma = torch.full((N, 2), 0.2)
    est_flux = true_flux + flux_sigma * torch.randn(N, 2, generator=gen)
    est_plocs = plocs + loc_sigma * torch.randn(N, 2, generator=gen)
    factor = torch.where(kind == 1, width_factor[1], width_factor[0])[:, None]
    truth = {"fluxes": true_flux, "plocs": plocs, "source_type": kind[:, None]}
    est = {"fluxes": est_flux, "plocs": est_plocs}
    for q in QUANTILES:
        est[f"fluxes@{q:g}"] = Normal(est_flux, factor * flux_sigma).icdf(torch.tensor(q))
        est[f"plocs@{q:g}"] = Normal(est_plocs, factor * loc_sigma).icdf(torch.tensor(q))

    def catalog(data):
        values = {k: v[None] for k, v in data.items()}
        return FullCatalog(1000, 1000, {"n_sources": torch.tensor([N]), **values})

    matches = [(torch.arange(N), torch.arange(N))]
    return catalog(truth), catalog(est), matches


def _tolerance(p: float, n: int) -> float:
    """Four binomial standard errors: a calibrated cell fails this about once in 16 000."""
    return 4 * math.sqrt(p * (1 - p) / n)


def test_calibrated_stars_and_overconfident_galaxies_per_bin():
    # galaxies' intervals are half as wide as they should be: their nominal 90 % interval
    # covers P(|z| < 1.645 / 2) = 0.589
    truth, est, matches = _catalogs({0: 1.0, 1: 0.5})
    rows = binned_coverage(
        truth, est, matches, ref_band=1, bands=BANDS, mag_bins=[16, 18, 20, 23], level=0.9
    )
    assert [(r["type"], r["mag_lo"]) for r in rows] == [
        ("star", 16),
        ("star", 18),
        ("star", 20),
        ("galaxy", 16),
        ("galaxy", 18),
        ("galaxy", 20),
    ]
    assert sum(r["n"] for r in rows) == N
    squeezed = 2 * Normal(0, 1).cdf(torch.tensor(1.6449 / 2)).item() - 1
    for row in rows:
        expected = 0.9 if row["type"] == "star" else squeezed
        for key in ("coverage_flux_g", "coverage_flux_r", "coverage_y", "coverage_x"):
            assert row[key] == pytest.approx(expected, abs=_tolerance(expected, row["n"])), (
                row,
                key,
            )
        # unbiased estimates: the median dmag of n sources has standard error ~1.25 sigma / sqrt(n)
        # with sigma = 1.0857 * 0.05 mag
        assert abs(row["mag_bias_median"]) < 4 * 1.25 * 0.0543 / math.sqrt(row["n"])
    text = format_binned_coverage(rows, BANDS)
    assert "galaxy" in text and "0.90" in text


def test_reliability_follows_the_diagonal_when_calibrated():
    truth, est, matches = _catalogs({0: 1.0, 1: 2.0})
    curves = reliability(truth, est, matches, LEVELS, bands=BANDS)
    assert curves["levels"] == list(LEVELS)
    for level, observed in zip(LEVELS, curves["star flux_r"], strict=True):
        assert observed == pytest.approx(level, abs=_tolerance(level, N // 2))
    # twice too wide: the nominal level a covers P(|z| < 2 z_a)
    for level, observed in zip(LEVELS, curves["galaxy position"], strict=True):
        z = Normal(0, 1).icdf(torch.tensor((1 + level) / 2))
        expected = float(2 * Normal(0, 1).cdf(2 * z) - 1)
        assert observed == pytest.approx(expected, abs=_tolerance(expected, N))


def test_missing_quantiles_and_types_are_named():
    truth, est, matches = _catalogs({0: 1.0, 1: 1.0})
    with pytest.raises(BlissValueError, match=r"fluxes@0\.025"):
        interval_hits(truth, est, matches, "fluxes", 0.95)
    no_type = FullCatalog(1000, 1000, {k: v for k, v in truth.items() if k != "source_type"})
    with pytest.raises(BlissValueError, match="source_type"):
        binned_coverage(no_type, est, matches, ref_band=1, bands=BANDS, mag_bins=[16, 23])
    with pytest.raises(BlissValueError, match="one name per band"):
        binned_coverage(truth, est, matches, ref_band=1, bands=("r",), mag_bins=[16, 23])
    with pytest.raises(BlissValueError, match="level=1.5"):
        level_quantiles(1.5)


def test_profile_bias_splits_galaxies_by_their_true_bulge_share():
    # galaxies alternate between bulge-dominated (disk_frac 0.2) and disk-dominated (0.8);
    # bulges are measured 0.1 mag too faint with intervals moved along, disks without bias
    truth, est, matches = _catalogs({0: 1.0, 1: 1.0})
    index = torch.arange(N)
    disk_frac = torch.where(index % 4 == 1, 0.2, 0.8)[None, :, None]
    bulge = (index % 4 == 1)[:, None]
    faint = 10 ** (-0.4 * 0.1)
    est_data = {
        key: torch.where(bulge, value[0] * faint, value[0])[None]
        if key.startswith("fluxes")
        else value
        for key, value in est.items()
    }
    est = FullCatalog(1000, 1000, est_data)
    truth = FullCatalog(1000, 1000, {**truth, "disk_frac": disk_frac})
    rows = profile_bias(truth, est, matches, ref_band=1, mag_bins=[16, 19.5, 23])
    assert [(r["profile"], r["mag_lo"]) for r in rows] == [
        ("bulge-dominated", 16),
        ("bulge-dominated", 19.5),
        ("disk-dominated", 16),
        ("disk-dominated", 19.5),
    ]
    # stars (even indices) are left out: N / 4 galaxies of each profile
    assert sum(r["n"] for r in rows[:2]) == N // 4
    assert sum(r["n"] for r in rows[2:]) == N // 4
    # the median dmag of n sources has standard error ~1.25 sigma / sqrt(n), sigma 0.0543 mag
    for row in rows:
        expected = 0.1 if row["profile"] == "bulge-dominated" else 0.0
        assert row["mag_bias_median"] == pytest.approx(
            expected, abs=4 * 1.25 * 0.0543 / math.sqrt(row["n"])
        )
        # the bulges' intervals were scaled with their estimates: they cover the truth when
        # z lies within 1.645 of the scaling's shift, (1 / faint - 1) / 0.05 = 1.93 sigma
        shift = torch.tensor((1 / faint - 1) / 0.05)
        z90 = Normal(0, 1).icdf(torch.tensor(0.95))
        scaled = float(Normal(0, 1).cdf(shift + z90) - Normal(0, 1).cdf(shift - z90))
        covered = scaled if row["profile"] == "bulge-dominated" else 0.9
        assert row["coverage_flux"] == pytest.approx(covered, abs=_tolerance(covered, row["n"]))
    assert "bulge-dominated" in format_profile_bias(rows)
    with pytest.raises(BlissValueError, match="disk_frac"):
        no_profile = FullCatalog(1000, 1000, {k: v for k, v in truth.items() if k != "disk_frac"})
        profile_bias(no_profile, est, matches, ref_band=1, mag_bins=[16, 23])
