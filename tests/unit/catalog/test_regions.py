"""DS9 region files: they parse, and their circles sit on the catalog's sources."""

import re

import numpy as np
import pytest
import torch

from bliss.catalog import FullCatalog
from bliss.catalog.io import catalog_to_table
from bliss.catalog.regions import REGION_COLORS, write_regions
from bliss.errors import BlissValueError
from bliss.simulator.field import simple_wcs

_CIRCLE = re.compile(r"^circle\(([-+\d.eE]+),([-+\d.eE]+),([\d.]+)(\"?)\)\s*#\s*color=(\w+)$")


def parse_regions(text: str) -> tuple[str, list[dict]]:
    """A DS9 4.1 region file: its coordinate system and its circles (a minimal parser)."""
    lines = text.splitlines()
    assert lines[0] == "# Region file format: DS9 version 4.1"
    system, circles = None, []
    for line in lines[1:]:
        if not line or line.startswith("#") or line.startswith("global "):
            continue
        if line in ("fk5", "image", "icrs", "physical"):
            system = line
            continue
        match = _CIRCLE.match(line)
        assert match, f"not a DS9 circle: {line!r}"
        a, b, radius, arcsec, color = match.groups()
        assert system is not None, "a shape before the coordinate system"
        circles.append(
            {
                "a": float(a),
                "b": float(b),
                "radius": float(radius),
                "arcsec": bool(arcsec),
                "color": color,
            }
        )
    return system, circles


def table_of(with_wcs: bool):
    catalog = FullCatalog(
        40,
        50,
        {
            "n_sources": torch.tensor([3]),
            "plocs": torch.tensor([[[10.5, 20.5], [30.25, 5.75], [0.5, 49.5]]]),
            "prob_galaxy": torch.tensor([[[0.1], [0.9], [0.5]]]),
            "fluxes": torch.ones(1, 3, 1),
        },
    )
    return catalog_to_table(catalog, ("r",), wcs=simple_wcs(40, 50, 0.4) if with_wcs else None)


def test_image_coordinates_are_the_table_positions_plus_one(tmp_path):
    table = table_of(with_wcs=False)
    path = write_regions(table, tmp_path / "cat.reg", radius_px=4.0, pixel_scale_arcsec=0.4)
    system, circles = parse_regions(path.read_text())
    assert system == "image"  # no WCS (ra / dec are NaN): DS9 image pixels
    np.testing.assert_allclose([c["a"] for c in circles], table["x"].value + 1, atol=1e-3)
    np.testing.assert_allclose([c["b"] for c in circles], table["y"].value + 1, atol=1e-3)
    assert [c["radius"] for c in circles] == [4.0] * 3 and not any(c["arcsec"] for c in circles)
    # the first pixel's centre (row 0.5, col 0.5 inside bliss) is DS9's (1, 1)
    assert (circles[2]["a"], circles[2]["b"]) == (50.0, 1.0)
    assert [c["color"] for c in circles] == [
        REGION_COLORS["star"],
        REGION_COLORS["galaxy"],
        REGION_COLORS["galaxy"],
    ]


def test_fk5_circles_at_the_catalog_ra_dec(tmp_path):
    table = table_of(with_wcs=True)
    path = write_regions(table, tmp_path / "cat.reg", radius_px=5.0, pixel_scale_arcsec=0.4)
    system, circles = parse_regions(path.read_text())
    assert system == "fk5"
    np.testing.assert_allclose([c["a"] for c in circles], table["ra"].value, atol=1e-7)
    np.testing.assert_allclose([c["b"] for c in circles], table["dec"].value, atol=1e-7)
    assert all(c["arcsec"] and c["radius"] == pytest.approx(2.0) for c in circles)


def test_an_empty_catalog_writes_a_valid_file_and_bad_inputs_raise(tmp_path):
    empty = table_of(with_wcs=False)[:0]
    system, circles = parse_regions(write_regions(empty, tmp_path / "e.reg").read_text())
    assert system == "image" and circles == []
    with pytest.raises(BlissValueError, match="radius_px=0"):
        write_regions(table_of(False), tmp_path / "x.reg", radius_px=0)
