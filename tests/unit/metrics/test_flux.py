import json
import math

import pytest
import torch
from torch.distributions import Normal

from bliss.catalog import FullCatalog
from bliss.catalog.convert import mag_to_nmgy
from bliss.errors import BlissShapeError, BlissValueError, BlissWarning
from bliss.metrics import (
    calibration_curve,
    circular_abs_diff,
    flux_metrics,
    interval_coverage,
    match_full_catalogs,
    plot_calibration,
    shape_metrics,
)


def _catalog(rows_per_image, **values_per_image):
    """A FullCatalog with sources on row ``r``, col 5 and one value per source for each key."""
    n_max = max([len(r) for r in rows_per_image] + [1])
    batch = len(rows_per_image)
    data = {
        "n_sources": torch.tensor([len(r) for r in rows_per_image]),
        "plocs": torch.zeros(batch, n_max, 2),
    }
    for i, rows in enumerate(rows_per_image):
        data["plocs"][i, : len(rows)] = torch.tensor([[float(r), 5.0] for r in rows]).reshape(-1, 2)
    for key, per_image in values_per_image.items():
        data[key] = torch.zeros(batch, n_max, 1)
        for i, values in enumerate(per_image):
            data[key][i, : len(values), 0] = torch.tensor(values, dtype=torch.float32)
    return FullCatalog(20, 20, data)


# ---- flux errors -------------------------------------------------------------------------------
def test_flux_metrics_median_errors_overall_and_per_bin():
    true_mag = [[19.0, 21.0], [21.5]]
    est_mag = [[19.1, 20.7], [21.7]]  # errors +0.1, -0.3, +0.2
    truth = _catalog(
        [[2, 8], [4]], fluxes=[mag_to_nmgy(torch.tensor(m)).tolist() for m in true_mag]
    )
    est = _catalog([[2, 8], [4]], fluxes=[mag_to_nmgy(torch.tensor(m)).tolist() for m in est_mag])
    result = flux_metrics(
        truth, est, match_full_catalogs(truth, est), band=0, mag_bins=[18, 20, 22]
    )
    assert result["n_matched"] == 3
    assert result["mag_abs_err_median"] == pytest.approx(0.2, abs=1e-4)
    assert result["mag_bias_median"] == pytest.approx(0.1, abs=1e-4)
    assert result["per_bin"]["n_matched"] == [1, 2]
    # bin [20, 22): errors -0.3 and +0.2, so the median interpolates
    assert result["per_bin"]["mag_abs_err_median"] == pytest.approx([0.1, 0.25], abs=1e-4)
    assert result["per_bin"]["mag_bias_median"] == pytest.approx([0.1, -0.05], abs=1e-4)


def test_flux_metrics_without_matches_is_nan_not_zero():
    truth = _catalog([[2]], fluxes=[[1.0]])
    est = _catalog([[15]], fluxes=[[1.0]])
    result = flux_metrics(truth, est, match_full_catalogs(truth, est), mag_bins=[18, 30])
    assert result["n_matched"] == 0
    assert math.isnan(result["mag_abs_err_median"])
    assert math.isnan(result["per_bin"]["mag_abs_err_median"][0])
    assert json.loads(json.dumps(result))["n_matched"] == 0


def test_flux_metrics_needs_fluxes():
    truth = _catalog([[2]])
    with pytest.raises(BlissValueError, match="fluxes"):
        flux_metrics(truth, truth, match_full_catalogs(truth, truth))


# ---- interval coverage and calibration ---------------------------------------------------------
def test_coverage_of_a_known_gaussian():
    # P(|z| <= 0.674) = 0.4999 for a standard normal. With 10000 draws the observed coverage has
    # binomial std sqrt(0.5 * 0.5 / 10000) = 0.005, so 0.02 is a 4-sigma tolerance.
    truth = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    coverage = interval_coverage(
        truth, torch.full_like(truth, -0.674), torch.full_like(truth, 0.674)
    )
    assert coverage == pytest.approx(0.5, abs=0.02)


def test_coverage_includes_both_ends():
    truth = torch.tensor([-1.0, 1.0, 1.5])
    assert interval_coverage(truth, -torch.ones(3), torch.ones(3)) == pytest.approx(2 / 3)


def test_coverage_bad_inputs():
    truth = torch.zeros(3)
    with pytest.raises(BlissShapeError, match="lower"):
        interval_coverage(truth, torch.zeros(2), torch.zeros(3))
    with pytest.raises(BlissValueError, match="lower > upper"):
        interval_coverage(truth, torch.ones(3), torch.zeros(3))
    with pytest.warns(BlissWarning, match="no values"):
        assert math.isnan(interval_coverage(torch.zeros(0), torch.zeros(0), torch.zeros(0)))


def _gaussian_posterior(mean, scale):
    return lambda probs: Normal(mean, scale).icdf(probs[:, None])


def test_calibration_curve_of_calibrated_and_overconfident_posteriors():
    # Truth ~ N(mean, scale) per source; the right posterior is calibrated, one half as wide is
    # over-confident. Binomial std <= 0.005 for 10000 sources, so 0.02 is 4 sigma.
    generator = torch.Generator().manual_seed(1)
    mean = torch.randn(10_000, generator=generator) * 3
    scale = torch.rand(10_000, generator=generator) + 0.5
    truth = mean + scale * torch.randn(10_000, generator=generator)
    levels = [0.1, 0.3, 0.5, 0.7, 0.9]
    calibrated = calibration_curve(truth, _gaussian_posterior(mean, scale), levels)
    assert calibrated == pytest.approx(levels, abs=0.02)
    overconfident = calibration_curve(truth, _gaussian_posterior(mean, scale / 2), levels)
    assert all(obs < level - 0.03 for obs, level in zip(overconfident, levels, strict=True))


def test_calibration_curve_bad_inputs():
    truth = torch.zeros(4)
    posterior = _gaussian_posterior(torch.zeros(4), torch.ones(4))
    with pytest.raises(BlissValueError, match="levels"):
        calibration_curve(truth, posterior, [0.5, 1.0])
    with pytest.raises(BlissShapeError, match="quantile_fn"):
        calibration_curve(truth, lambda probs: torch.zeros(4, len(probs)), [0.5])
    with pytest.raises(BlissShapeError, match="truth_values"):
        calibration_curve(torch.zeros(2, 2), posterior, [0.5])


def test_plot_calibration_writes_png_atomically(tmp_path):
    path = tmp_path / "calibration.png"
    path.write_bytes(b"old")
    returned = plot_calibration([0.1, 0.5, 0.9], {"flux": [0.12, 0.48, 0.91]}, path)
    assert returned == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.png"]
    with pytest.raises(BlissValueError, match="levels"):
        plot_calibration([0.1, 0.5], {"flux": [0.1]}, path)


# ---- galaxy shapes (bliss.metrics.shape) -------------------------------------------------------
def test_circular_beta_error_wraps():
    error = circular_abs_diff(torch.tensor([0.05, 1.0]), torch.tensor([math.pi - 0.05, 1.2]))
    assert error.tolist() == pytest.approx([0.1, 0.2], abs=1e-6)


def test_shape_metrics_uses_matched_galaxies_only():
    # source 2 is a true galaxy estimated as a star: its huge errors must be ignored
    truth = _catalog(
        [[2, 8, 14]],
        source_type=[[1, 1, 1]],
        disk_q=[[0.5, 0.8, 0.1]],
        beta_rad=[[0.05, 1.0, 0.0]],
    )
    est = _catalog(
        [[2, 8, 14]],
        source_type=[[1, 1, 0]],
        disk_q=[[0.6, 0.5, 0.9]],
        beta_rad=[[math.pi - 0.05, 1.4, 1.5]],
    )
    result = shape_metrics(truth, est, match_full_catalogs(truth, est))
    assert result["n_galaxies"] == 2
    assert result["disk_q_abs_err_median"] == pytest.approx(0.2, abs=1e-6)  # median(0.1, 0.3)
    assert result["beta_rad_abs_err_median"] == pytest.approx(0.25, abs=1e-6)  # median(0.1, 0.4)
    assert "bulge_q_abs_err_median" not in result
