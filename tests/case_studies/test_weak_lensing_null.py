"""The SDSS null test's regression and its run on a synthetic catalog with a known leakage."""

import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from bliss.catalog import GALAXY_KEYS
from bliss.errors import BlissIOError
from bliss.surveys.sdss.psf import SdssPsf

sys.path.insert(0, str(Path(__file__).parents[2] / "case_studies" / "weak_lensing"))
import sdss_null_test  # noqa: E402

PSFIELD = (
    Path(__file__).parents[1] / "data" / "sdss" / "94" / "1" / "12" / "psField-000094-1-0012.fit"
)


def test_leakage_recovers_a_known_slope_and_offset():
    rng = np.random.default_rng(0)
    e_psf = rng.normal(0.02, 0.02, size=(4000, 2))
    e_gal = 0.01 + 0.5 * e_psf + rng.normal(0, 0.2, size=(4000, 2))
    fit = sdss_null_test.leakage(e_gal, e_psf)["e1"]
    # standard errors: 0.2 / (0.02 sqrt(4000)) = 0.16 for alpha, ~0.005 for c
    assert fit["alpha_se"] == pytest.approx(0.158, rel=0.1)
    assert abs(fit["alpha"] - 0.5) < 3 * fit["alpha_se"]
    assert abs(fit["c"] - 0.01) < 3 * fit["c_se"]


def _catalog(n: int, e_psf: np.ndarray, rng: np.random.Generator) -> Table:
    """Clean bright galaxies whose catalog e equals 2 x the PSF's plus noise; round shapes."""
    table = Table()
    table["x"] = rng.uniform(20, 2000, n)
    table["y"] = rng.uniform(20, 1450, n)
    table["prob_galaxy"] = np.full(n, 0.9)
    table["mag_r"] = np.full(n, 20.0)
    table["flags"] = np.zeros(n, dtype=np.int32)
    table["e1"] = 2 * e_psf[:, 0] + rng.normal(0, 0.01, n)
    table["e2"] = 2 * e_psf[:, 1] + rng.normal(0, 0.01, n)
    for key, value in zip(GALAXY_KEYS, (1.0, 0.0, 1.0, 1.0, 1.0, 1.0), strict=True):
        table[key] = np.full(n, value)
    return table


def test_the_null_test_finds_a_planted_leakage(tmp_path):
    rng = np.random.default_rng(1)
    n = 60
    positions = Table({"x": rng.uniform(20, 2000, n), "y": rng.uniform(20, 1450, n)})
    psf = SdssPsf.from_psfield(PSFIELD, "r")
    e_psf = sdss_null_test.psf_shapes(psf, positions["x"], positions["y"])
    table = _catalog(n, e_psf, rng)
    table["x"], table["y"] = positions["x"], positions["y"]
    table["flags"][:5] = 2  # edge: left out
    path = tmp_path / "cat.fits"
    table.write(path)
    report = sdss_null_test.main(
        ["--catalog", str(path), "--psfield", str(PSFIELD), "--out", str(tmp_path / "out")]
    )
    assert report["posterior"]["n_galaxies"] == n - 5
    # e = 2 e_psf + noise 0.01: the means are twice the PSF's and the fit's slope is 2
    for k, name in enumerate(("e1", "e2")):
        mean = report["posterior"][name]["mean"]
        assert mean == pytest.approx(2 * float(np.mean(e_psf[5:, k])), abs=0.01)
        assert report["posterior"][name]["alpha"] == pytest.approx(2.0, abs=0.5)
    # round point-estimate shapes: e = 0 exactly
    assert report["point"]["e1"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert (tmp_path / "out" / "sdss_null_test.png").exists()


def test_a_catalog_without_shape_columns_is_refused(tmp_path):
    table = Table({"x": [1.0], "y": [1.0], "prob_galaxy": [0.9]})
    with pytest.raises(BlissIOError, match="no column"):
        sdss_null_test.select_galaxies(table, 21.5)
