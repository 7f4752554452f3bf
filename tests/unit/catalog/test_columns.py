"""The column reference, the table built from a catalog, and the files written from it."""

from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import QTable

from bliss.catalog import GALAXY_KEYS, FullCatalog
from bliss.catalog.columns import (
    COLUMNS,
    column_description,
    describe,
    flux_snr,
    mag_err,
    update_markdown,
)
from bliss.catalog.io import (
    catalog_to_table,
    read_table,
    stack_samples,
    table_to_full_catalog,
    write_table,
)
from bliss.simulator.field import simple_wcs

DOCS = Path(__file__).parents[3] / "docs" / "columns.md"
BANDS = ("g", "r")


def point_catalog(n: int = 3) -> FullCatalog:
    """A one-image catalog with every key the predictor gives, quantiles included."""
    rng = np.random.default_rng(1)
    plocs = torch.tensor(rng.uniform(5, 40, (1, n, 2)), dtype=torch.float32)
    fluxes = torch.tensor(rng.uniform(1, 50, (1, n, 2)), dtype=torch.float32)
    data = {
        "n_sources": torch.tensor([n]),
        "plocs": plocs,
        "prob_source": torch.full((1, n, 1), 0.9),
        "prob_source_marginal": torch.full((1, n, 1), 0.85),  # predict.marginal_samples > 0
        "prob_galaxy": torch.tensor([[[0.2], [0.7], [0.5]]])[:, :n],
        "fluxes": fluxes,
        "locs": torch.full((1, n, 2), 0.5),
    }
    for q, factor in ((0.05, 0.8), (0.95, 1.25), (0.16, 0.9), (0.84, 1.1)):
        data[f"fluxes@{q:g}"] = fluxes * factor
        data[f"plocs@{q:g}"] = plocs + (q - 0.5)  # 16-84 %: 0.68 px wide, half-width 0.34
    for key in GALAXY_KEYS:
        data[key] = torch.full((1, n, 1), 0.4)
    data["ellipticity"] = torch.tensor([[[0.1, -0.2]]]).expand(1, n, 2)
    for q, shift in ((0.05, -0.1), (0.95, 0.1)):
        data[f"ellipticity@{q:g}"] = data["ellipticity"] + shift
    return FullCatalog(48, 48, data)


def test_every_column_has_a_unit_and_a_short_description():
    names = [column.name for column in COLUMNS]
    assert len(names) == len(set(names))
    for column in COLUMNS:
        u.Unit(column.unit)  # astropy parses each unit string ("" is dimensionless)
        assert column.description and len(column.description) <= 68, column.name
        assert column.kinds and column.kinds <= {"catalog", "samples"}
        assert np.dtype(column.dtype)


def test_docs_columns_page_is_the_rendered_reference():
    text = DOCS.read_text()
    assert update_markdown(text) == text, "run `python docs/_ext/columns.py` and commit the page"
    for column in COLUMNS:
        assert f"| `{column.name}` |" in text


def test_every_written_column_is_in_the_reference_with_its_unit():
    table = catalog_to_table(point_catalog(), BANDS, wcs=simple_wcs(48, 48, 0.4), flags=[0, 1, 2])
    for name in table.colnames:
        reference = describe(name)
        assert reference is not None, name
        unit = getattr(table[name], "unit", None)
        assert (unit or u.dimensionless_unscaled) == u.Unit(reference.unit), name
        assert table[name].info.description == column_description(name)
        assert np.dtype(table[name].dtype) == np.dtype(reference.dtype), name
    written = {describe(name).name for name in table.colnames}
    expected = {c.name for c in COLUMNS if "catalog" in c.kinds}
    assert written == expected
    assert column_description("flux_r_njy") == "flux_r in nanojansky (x 3631)"


def test_error_columns_follow_the_one_definition():
    catalog = point_catalog()
    table = catalog_to_table(catalog, BANDS)
    flux = catalog["fluxes"][0, :, 1].numpy()
    np.testing.assert_allclose(table["snr_r"], flux / (0.1 * flux), rtol=1e-5)  # 1 / 0.1
    np.testing.assert_allclose(table["mag_r_err"].value, 1.25 * np.log10(1.1 / 0.9), rtol=1e-5)
    np.testing.assert_allclose(table["x_err"].value, 0.34, rtol=1e-5)
    np.testing.assert_allclose(table["id"], [1, 2, 3])
    np.testing.assert_allclose(table["flux_r_njy"].value, flux * 3631, rtol=1e-6)
    assert np.isnan(mag_err(np.array([0.0]), np.array([1.0]))).all()
    assert flux_snr(np.array([5.0]), np.array([4.0]), np.array([6.0]))[0] == 5.0


def test_shapes_are_nan_for_stars_and_ra_dec_nan_without_a_wcs():
    table = catalog_to_table(point_catalog(), BANDS)
    assert {"ra", "dec"} <= set(table.colnames) and np.isnan(table["ra"].value).all()
    for key in (*GALAXY_KEYS, "e1", "e2", "e1_lo", "e2_hi"):
        values = np.asarray(getattr(table[key], "value", table[key]))
        # prob_galaxy 0.2, 0.7, 0.5: the star's shape is NaN, galaxies keep theirs
        assert np.isnan(values[0]) and np.isfinite(values[1:]).all(), key
    # the spin-2 ellipticity is split into its components, with their interval
    np.testing.assert_allclose(table["e1"][1:], 0.1)
    np.testing.assert_allclose(table["e2"][1:], -0.2)
    np.testing.assert_allclose(table["e2_lo"][1:], -0.3, rtol=1e-6)


def test_samples_have_source_type_shapes_nan_for_stars_and_no_flags():
    drawn = point_catalog()
    data = {k: v for k, v in drawn.items() if "@" not in k and not k.startswith("prob_")}
    data["source_type"] = torch.tensor([[[0.0], [1.0], [1.0]]])
    sample = FullCatalog(48, 48, data)
    table = stack_samples([catalog_to_table(sample, BANDS, interval=(0, 0))])
    assert {describe(name).name for name in table.colnames} == {
        c.name for c in COLUMNS if "samples" in c.kinds
    }
    assert np.isnan(table["disk_q"].value[0]) and table["disk_q"].value[1] == pytest.approx(0.4)


def test_fits_catalog_has_tunit_tcomm_on_every_column_and_numeric_header(tmp_path):
    table = catalog_to_table(
        point_catalog(),
        BANDS,
        wcs=simple_wcs(48, 48, 0.4),
        meta={"NSOURCES": np.int64(3), "APCOR_R": np.float32(1.25), "INPUT": "a.fits"},
        flags=np.array([0, 1, 2]),
    )
    path = write_table(table, tmp_path / "cat.fits")
    header = fits.getheader(path, 1)
    for number, name in enumerate(table.colnames, start=1):
        assert header[f"TTYPE{number}"] == name
        assert f"TUNIT{number}" in header and header[f"TCOMM{number}"] == column_description(name)
    units = {header[f"TTYPE{i}"]: header[f"TUNIT{i}"] for i in range(1, header["TFIELDS"] + 1)}
    assert units["flux_r"] == "nmgy" and units["flux_r_njy"] == "nJy" and units["x"] == "pix"
    assert units["prob_source"] == "" and units["ra"] == "deg" and units["mag_r_err"] == "mag"
    assert header["NSOURCES"] == 3 and isinstance(header["NSOURCES"], int)
    assert header["APCOR_R"] == pytest.approx(1.25) and header["INPUT"] == "a.fits"
    back = read_table(path)  # astropy alone leaves nmgy an UnrecognizedUnit, with a warning
    assert back["flux_r"].unit == u.nmgy and back["flags"].dtype.kind == "i"
    assert back["x"].info.description == column_description("x")
    assert not [key for key in back.meta if key.startswith("TCOMM")]
    np.testing.assert_array_equal(back["flux_r"].value, table["flux_r"].value)
    # re-writing what was read does not pile up TCOMM keys from the meta
    again = fits.getheader(write_table(back, tmp_path / "again.fits"), 1)
    assert again["TCOMM2"] == column_description("x")
    for suffix in (".parquet", ".ecsv"):
        kept = QTable.read(write_table(table, tmp_path / f"cat{suffix}"))
        assert kept["snr_r"].info.description == column_description("snr_r")
        assert kept.meta["NSOURCES"] == 3


def test_a_truth_tables_disk_frac_is_read_and_other_tables_go_without():
    table = QTable(
        {
            "x": [1.0, 5.0],
            "y": [2.0, 6.0],
            "flux_g": [1.0, 2.0],
            "flux_r": [3.0, 4.0],
            "source_type": [1, 0],
            "disk_frac": [0.25, np.nan],
        }
    )
    catalog = table_to_full_catalog(table, BANDS, 10, 10)
    assert catalog["disk_frac"].shape == (1, 2, 1)
    assert catalog["disk_frac"][0, 0, 0] == 0.25 and torch.isnan(catalog["disk_frac"][0, 1, 0])
    del table["disk_frac"]
    assert "disk_frac" not in table_to_full_catalog(table, BANDS, 10, 10)
