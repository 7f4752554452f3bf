"""The COSMOS parametric catalog reader: conventions on a synthetic file, then the real catalog.

The real catalog ships in the optional fpfs wheel; its tests skip when fpfs is not installed.
The magnitude-matched shape sampler (CosmosShapes) is tested last, on both.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits

from bliss.catalog import GALAXY_KEYS
from bliss.errors import BlissConfigError, BlissIOError, BlissValueError
from bliss.simulator import cosmos
from bliss.simulator.cosmos import CosmosShapes, cosmos_catalog_path, load_cosmos_galaxies
from bliss.simulator.prior import CatalogPrior

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


# ---- CosmosShapes: magnitude-matched draws --------------------------------------------------------

N_DRAWS = 2000


def _draw(shapes: CosmosShapes, ref_mag: float | torch.Tensor, seed: int = 0) -> dict:
    ref_mag = torch.as_tensor(ref_mag, dtype=torch.float32).expand(N_DRAWS).contiguous()
    return shapes.sample(ref_mag, torch.Generator().manual_seed(seed))


def _shape_catalog(tmp_path: Path, mags: list[float]) -> Path:
    """One galaxy per magnitude; row ``i`` has a disk of ``10 + i`` px, so ``hlr = 0.015 (10 + i)``."""
    rows = [
        {
            "mag": mag,
            "sersic": _fit(1.0, 10.0, 1.5, 0.5, 0.3),
            "disk": _fit(1.0, 10.0 + i, 1, 0.25, 0.5),
            "bulge": _fit(2.0, 4.0, 4, 0.64, 0.4),
        }
        for i, mag in enumerate(mags)
    ]
    return _write_catalog(tmp_path / "shapes.fits", rows)


def _rows(draws: dict) -> torch.Tensor:
    """The synthetic catalog row each draw came from (see ``_shape_catalog``)."""
    return torch.round(draws["disk_hlr_arcsec"][:, 0].double() / 0.015 - 10).long()


def test_faint_and_bright_targets_take_the_catalogs_extreme_galaxies(tmp_path: Path) -> None:
    path = _shape_catalog(tmp_path, [20.0, 21.0, 22.0, 24.8, 25.0, 25.1])
    shapes = CosmosShapes(path, mag_window=0.25)
    for target in (25.1, 27.0, 40.0):  # clamped to the limit 25.1: the window [24.85, 25.1]
        rows = _rows(_draw(shapes, target))
        assert set(rows.tolist()) == {4, 5}, target  # not 24.8, outside the window
        # uniform over the two: Bernoulli(1/2) standard error sqrt(1/4 / n)
        assert float((rows == 5).double().mean()) == pytest.approx(
            0.5, abs=5 * math.sqrt(0.25 / N_DRAWS)
        )
    for target in (20.0, 15.0):
        assert set(_rows(_draw(shapes, target)).tolist()) == {0}, target


def test_an_empty_window_takes_the_nearest_galaxy(tmp_path: Path) -> None:
    shapes = CosmosShapes(_shape_catalog(tmp_path, [20.0, 22.0]), mag_window=0.25)
    for target, row in ((20.5, 0), (20.9, 0), (21.1, 1), (21.5, 1)):
        assert set(_rows(_draw(shapes, target)).tolist()) == {row}, target


def test_mag_offset_shifts_the_target(tmp_path: Path) -> None:
    path = _shape_catalog(tmp_path, [20.0, 21.0, 22.0])
    for offset, row in ((0.0, 1), (1.0, 2), (-1.0, 0)):
        shapes = CosmosShapes(path, mag_window=0.25, mag_offset=offset)
        assert set(_rows(_draw(shapes, 21.0)).tolist()) == {row}, offset


@pytest.mark.parametrize("mag_window", [0.0, -0.25, float("nan")])
def test_a_non_positive_mag_window_is_a_config_error(mag_window: float, tmp_path: Path) -> None:
    # refused before any file is read
    with pytest.raises(BlissConfigError, match=r"mag_window=.*positive width"):
        CosmosShapes(tmp_path / "never_read.fits", mag_window=mag_window)


@pytest.fixture(scope="module")
def cosmos_shapes(catalog_path: Path) -> CosmosShapes:
    return CosmosShapes()


def _indexed(shapes: CosmosShapes) -> CosmosShapes:
    """The same sampler with every shape replaced by its row index in ``shapes.mag``."""
    n_rows = len(shapes.mag)
    assert n_rows < 2**24  # float32 holds every index exactly
    indexed = CosmosShapes.__new__(CosmosShapes)
    indexed.__dict__.update(shapes.__dict__)
    indexed.shapes = torch.arange(n_rows, dtype=torch.float32)[:, None].expand(-1, len(GALAXY_KEYS))
    return indexed


def test_drawn_shapes_are_in_the_support(cosmos_shapes: CosmosShapes) -> None:
    ref_mag = torch.linspace(15.0, 28.0, 20 * N_DRAWS)  # brighter and fainter than the catalog
    draws = cosmos_shapes.sample(ref_mag, torch.Generator().manual_seed(0))
    assert list(draws) == list(GALAXY_KEYS)
    for key, values in draws.items():
        assert values.shape == (len(ref_mag), 1) and values.dtype == torch.float32, key
        assert bool(torch.isfinite(values).all()), key
    for key in ("disk_q", "bulge_q"):
        assert float(draws[key].min()) > 0 and float(draws[key].max()) <= 1, key
    for key in ("disk_hlr_arcsec", "bulge_hlr_arcsec"):
        assert float(draws[key].min()) > 0, key
    assert float(draws["disk_frac"].min()) >= 0 and float(draws["disk_frac"].max()) <= 1
    # compared in float64: a float32 angle must not round up to pi
    beta = draws["beta_rad"].double()
    assert float(beta.min()) >= 0 and float(beta.max()) < math.pi


def test_bright_targets_draw_larger_galaxies(cosmos_shapes: CosmosShapes) -> None:
    """F814W 20 galaxies have disks ~5x the size of 25th-magnitude ones (0.71 vs 0.15 arcsec)."""
    bright = float(_draw(cosmos_shapes, 20.0)["disk_hlr_arcsec"].median())
    faint = float(_draw(cosmos_shapes, 25.0)["disk_hlr_arcsec"].median())
    assert bright > 2 * faint
    assert 0.3 < bright < 1.5 and 0.05 < faint < 0.3


@pytest.mark.parametrize("mag_window", [0.1, 0.25, 0.5])
def test_drawn_galaxies_are_within_the_magnitude_window(
    cosmos_shapes: CosmosShapes, mag_window: float
) -> None:
    shapes = _indexed(cosmos_shapes)
    shapes.mag_window = mag_window
    mag = shapes.mag
    # the catalog's widest magnitude gap is 0.197, so every target in range has a galaxy within
    # 0.1 mag and the nearest-galaxy fallback never applies
    assert float(torch.diff(mag).max()) < 2 * 0.1
    target = torch.linspace(float(mag[0]), float(mag[-1]), 10 * N_DRAWS)
    index = shapes.sample(target, torch.Generator().manual_seed(0))["disk_q"][:, 0].long()
    offset = (mag[index] - target.double()).abs()
    assert float(offset.max()) <= mag_window + 1e-9


def test_draws_are_uniform_over_the_window(cosmos_shapes: CosmosShapes) -> None:
    shapes = _indexed(cosmos_shapes)
    index = _draw(shapes, 22.0)["disk_q"][:, 0].double()
    in_window = torch.nonzero((shapes.mag - 22.0).abs() <= shapes.mag_window)[:, 0]
    low, high, n_window = int(in_window[0]), int(in_window[-1]), len(in_window)
    assert n_window > 1000
    assert float(index.min()) >= low and float(index.max()) <= high
    # discrete uniform on [low, high]: mean (low + high) / 2, standard deviation n_window / sqrt(12)
    assert float(index.mean()) == pytest.approx(
        (low + high) / 2, abs=5 * n_window / math.sqrt(12 * N_DRAWS)
    )
    # n draws with replacement from N galaxies hit N (1 - e^-r) distinct ones, r = n / N, with
    # variance N e^-r (1 - (1 + r) e^-r) (occupancy problem, large N)
    rate = N_DRAWS / n_window
    hit = math.exp(-rate)
    expected, spread = n_window * (1 - hit), math.sqrt(n_window * hit * (1 - (1 + rate) * hit))
    assert len(set(index.tolist())) == pytest.approx(expected, abs=5 * spread)


def test_the_same_seed_gives_the_same_shapes(cosmos_shapes: CosmosShapes) -> None:
    ref_mag = torch.linspace(18.0, 26.0, N_DRAWS)
    first, again, other = (
        cosmos_shapes.sample(ref_mag, torch.Generator().manual_seed(seed)) for seed in (3, 3, 4)
    )
    for key in GALAXY_KEYS:
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["disk_hlr_arcsec"], other["disk_hlr_arcsec"])


def test_a_prior_with_cosmos_shapes_draws_bright_galaxies_larger(
    cosmos_shapes: CosmosShapes,
) -> None:
    prior = CatalogPrior(
        ["r"],
        "r",
        0.396,
        density_per_arcmin2=20_000.0,
        prob_galaxy=1.0,
        galaxy_flux={"min_nmgy": 1.0, "max_nmgy": 1e4, "alpha": 0.5},  # r 22.5 to 12.5
        galaxy_shape_catalog=cosmos_shapes,
    )
    catalog = prior.sample(2, 16, 16, torch.Generator().manual_seed(0))
    on = catalog.is_on_mask
    ref_mag = 22.5 - 2.5 * torch.log10(catalog["fluxes"][..., 0][on])
    disk_hlr = catalog["disk_hlr_arcsec"][on][:, 0]
    assert len(ref_mag) > 200 and float((ref_mag < 20).double().mean()) > 0.1
    assert float(disk_hlr.min()) > 0 and float(catalog["disk_q"][on].max()) <= 1
    # COSMOS: median disks of 1.3 arcsec brighter than r = 20, 0.45 fainter than 21.5 (seed 0)
    bright, faint = disk_hlr[ref_mag < 20].median(), disk_hlr[ref_mag > 21.5].median()
    assert float(bright) > 1.3 * float(faint)
