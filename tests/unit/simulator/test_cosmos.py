"""The COSMOS parametric catalog reader: conventions on a synthetic file, then the real catalog.

The real catalog ships in the optional fpfs wheel; its tests skip when fpfs is not installed.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from bliss.catalog import GALAXY_KEYS
from bliss.errors import BlissConfigError, BlissIOError, BlissValueError
from bliss.simulator import cosmos
from bliss.simulator.cosmos import cosmos_catalog_path, load_cosmos_galaxies

N_GOOD_ROWS = 81_448  # of 81,499 in fpfs 3.1.1 (see load_cosmos_galaxies)


def _fit(intensity: float, radius_px: float, n: float, q: float, phi: float) -> list[float]:
    return [intensity, radius_px, n, q, 0.0, 100.0, 100.0, phi]


def _write_catalog(path: Path, rows: list[dict]) -> Path:
    """A catalog in the layout of GalSim's COSMOS parametric fits."""
    columns = [
        fits.Column("IDENT", "J", array=np.arange(len(rows))),
        fits.Column("mag_auto", "D", array=[row["mag"] for row in rows]),
        fits.Column("zphot", "D", array=[0.5] * len(rows)),
        fits.Column("sersicfit", "8D", array=np.array([row["sersic"] for row in rows])),
        fits.Column(
            "bulgefit", "16D", array=np.array([row["disk"] + row["bulge"] for row in rows])
        ),
        fits.Column(
            "fit_status", "5J", array=np.array([row.get("status", [1] * 5) for row in rows])
        ),
        fits.Column("use_bulgefit", "J", array=[1] * len(rows)),
        fits.Column("viable_sersic", "J", array=[1] * len(rows)),
    ]
    fits.BinTableHDU.from_columns(columns).writeto(path)
    return path


@pytest.fixture
def synthetic(tmp_path: Path) -> dict[str, np.ndarray]:
    """Four galaxies: plain, a bulge with q > 1, a dark bulge, and a failed fit (dropped)."""
    sersic = _fit(1.0, 10.0, 1.5, 0.5, 0.3)
    rows = [
        {
            "mag": 22.0,
            "sersic": sersic,
            "disk": _fit(1.0, 10.0, 1, 0.25, 0.5),
            "bulge": _fit(2.0, 4.0, 4, 0.64, 0.4),
        },
        {
            "mag": 23.0,
            "sersic": sersic,
            "disk": _fit(1.0, 10.0, 1, 0.5, 3.0),
            "bulge": _fit(2.0, 4.0, 4, 4.0, 0.2),
        },
        {
            "mag": 24.0,
            "sersic": _fit(1.0, 10.0, 1.5, 0.5, -0.3),
            "disk": _fit(1.0, 10.0, 1, 0.5, 1.0),
            "bulge": _fit(0.0, 0.0, 4, 0.5, 0.0),
        },
        {
            "mag": 21.0,
            "sersic": sersic,
            "disk": _fit(1.0, 10.0, 1, 0.5, 0.0),
            "bulge": _fit(1.0, 4.0, 4, 0.5, 0.0),
            "status": [0, 1, 1, 1, 1],
        },
    ]
    return load_cosmos_galaxies(_write_catalog(tmp_path / "cosmos.fits", rows))


def test_failed_fits_are_dropped(synthetic: dict[str, np.ndarray]) -> None:
    assert synthetic["ident"].tolist() == [0, 1, 2]
    assert synthetic["mag"].tolist() == [22.0, 23.0, 24.0]


def test_radii_are_circularised_and_in_arcsec(synthetic: dict[str, np.ndarray]) -> None:
    # hlr = 0.03 arcsec * r * sqrt(q), the geometric mean of the half-light semi-axes
    np.testing.assert_allclose(synthetic["disk_hlr_arcsec"][0], 0.03 * 10 * 0.5)
    np.testing.assert_allclose(synthetic["bulge_hlr_arcsec"][0], 0.03 * 4 * 0.8)
    np.testing.assert_allclose(synthetic["sersic_hlr_arcsec"][0], 0.03 * 10 * math.sqrt(0.5))


def test_axis_ratios_above_one_turn_the_major_axis(synthetic: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(synthetic["bulge_q"][1], 0.25)
    np.testing.assert_allclose(synthetic["bulge_beta_rad"][1], 0.2 + math.pi / 2)
    np.testing.assert_allclose(synthetic["bulge_hlr_arcsec"][1], 0.03 * 4 * 2)  # unchanged
    np.testing.assert_allclose(synthetic["disk_beta_rad"][1], 3.0)  # already in [0, pi)
    np.testing.assert_allclose(synthetic["sersic_beta_rad"][2], math.pi - 0.3)  # wrapped


def test_disk_fraction_and_position_angle(synthetic: dict[str, np.ndarray]) -> None:
    # Sersic flux = k_n I r^2 q: disk k_1 * 1 * 100 * 0.25 against bulge k_4 * 2 * 16 * 0.64
    disk = 11.948494741464001 * 25.0
    bulge = 22.665233723581743 * 2 * 16 * 0.64
    np.testing.assert_allclose(synthetic["disk_frac"][0], disk / (disk + bulge))
    assert synthetic["disk_frac"][0] < 0.5
    np.testing.assert_allclose(synthetic["beta_rad"][0], 0.4)  # the brighter bulge's angle
    np.testing.assert_allclose(synthetic["beta_rad"][2], 1.0)  # the only lit component, a disk


def test_a_dark_bulge_borrows_the_disk_shape(synthetic: dict[str, np.ndarray]) -> None:
    assert synthetic["disk_frac"][2] == 1.0
    assert synthetic["bulge_q"][2] == synthetic["disk_q"][2]
    assert synthetic["bulge_hlr_arcsec"][2] == synthetic["disk_hlr_arcsec"][2]


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BlissIOError, match="nope.fits does not exist"):
        load_cosmos_galaxies(tmp_path / "nope.fits")


def test_a_file_without_fits_is_a_clear_error(tmp_path: Path) -> None:
    columns = [fits.Column("IDENT", "J", array=[1]), fits.Column("mag_auto", "D", array=[20.0])]
    fits.BinTableHDU.from_columns(columns).writeto(tmp_path / "other.fits")
    with pytest.raises(BlissIOError, match=r"no column\(s\) \['sersicfit', 'bulgefit'"):
        load_cosmos_galaxies(tmp_path / "other.fits")


def test_a_bad_magnitude_cut_is_a_clear_error() -> None:
    with pytest.raises(BlissValueError, match="max_mag=nan"):
        load_cosmos_galaxies(Path("unused.fits"), max_mag=float("nan"))


def test_without_fpfs_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cosmos.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BlissConfigError, match=r'pip install "bliss-toolkit\[weak_lensing\]"'):
        cosmos_catalog_path()
    with pytest.raises(BlissConfigError, match="fpfs"):
        load_cosmos_galaxies()


@pytest.fixture(scope="module")
def catalog_path() -> Path:
    try:
        return cosmos_catalog_path()
    except BlissConfigError:
        pytest.skip("fpfs (pip install 'bliss-toolkit[weak_lensing]') is not installed")


@pytest.fixture(scope="module")
def galaxies(catalog_path: Path) -> dict[str, np.ndarray]:
    return load_cosmos_galaxies()


def test_the_catalog_is_found_without_importing_fpfs(
    catalog_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "fpfs", raising=False)
    assert cosmos_catalog_path() == catalog_path
    assert catalog_path.name == "src_cosmos.fits"
    assert "fpfs" not in sys.modules  # importing fpfs would load jax


def test_rows_and_keys(galaxies: dict[str, np.ndarray]) -> None:
    assert len(galaxies["mag"]) == N_GOOD_ROWS
    assert all(len(value) == N_GOOD_ROWS for value in galaxies.values())
    assert [key for key in galaxies if key in GALAXY_KEYS] == list(GALAXY_KEYS)
    assert list(galaxies)[:2] == ["mag", "redshift"]


def test_parameters_are_in_range(galaxies: dict[str, np.ndarray]) -> None:
    for key in ("disk_q", "bulge_q", "sersic_q"):
        assert np.all((galaxies[key] > 0) & (galaxies[key] <= 1)), key
    for key in ("disk_hlr_arcsec", "bulge_hlr_arcsec", "sersic_hlr_arcsec"):
        assert np.all((galaxies[key] > 0) & (galaxies[key] <= 10)), key
    for key in ("beta_rad", "disk_beta_rad", "bulge_beta_rad", "sersic_beta_rad"):
        assert np.all((galaxies[key] >= 0) & (galaxies[key] < math.pi)), key
    assert np.all((galaxies["disk_frac"] >= 0) & (galaxies["disk_frac"] <= 1))
    assert np.all((galaxies["sersic_n"] >= 0.3) & (galaxies["sersic_n"] <= 6))
    assert np.all(galaxies["mag"] <= 25.2)
    assert np.all((galaxies["redshift"] > 0) & (galaxies["redshift"] < 6))


def test_sizes_are_plausible(galaxies: dict[str, np.ndarray]) -> None:
    """Median half-light radii of an F814W < 25.2 sample: ~0.2 arcsec; bulges are compact."""
    assert 0.2 < np.median(galaxies["sersic_hlr_arcsec"]) < 1.0
    assert 0.2 < np.median(galaxies["disk_hlr_arcsec"]) < 1.0
    assert 0.03 < np.median(galaxies["bulge_hlr_arcsec"]) < np.median(galaxies["disk_hlr_arcsec"])
    bright = load_cosmos_galaxies(max_mag=22.0)
    assert 0 < len(bright["mag"]) < N_GOOD_ROWS / 5
    assert np.all(bright["mag"] <= 22.0)
    assert np.median(bright["sersic_hlr_arcsec"]) > np.median(galaxies["sersic_hlr_arcsec"])


def test_conversion_matches_the_catalogs_own_columns(
    galaxies: dict[str, np.ndarray], catalog_path: Path
) -> None:
    """Where GalSim draws the bulge+disk fit, its precomputed hlr and flux columns agree."""
    with fits.open(catalog_path) as hdus:
        table = hdus[1].data
    row = {ident: i for i, ident in enumerate(table["IDENT"])}
    index = np.array([row[ident] for ident in galaxies["ident"]])
    hlr, flux = np.asarray(table["hlr"])[index], np.asarray(table["flux"])[index]
    drawn = galaxies["use_bulgefit"]
    assert drawn.sum() > 20_000
    np.testing.assert_allclose(galaxies["sersic_hlr_arcsec"], hlr[:, 0], rtol=1e-6)
    np.testing.assert_allclose(galaxies["bulge_hlr_arcsec"][drawn], hlr[drawn, 1], rtol=1e-6)
    np.testing.assert_allclose(galaxies["disk_hlr_arcsec"][drawn], hlr[drawn, 2], rtol=1e-6)
    disk_frac = flux[drawn, 2] / (flux[drawn, 1] + flux[drawn, 2])
    np.testing.assert_allclose(galaxies["disk_frac"][drawn], disk_frac, atol=1e-4)
