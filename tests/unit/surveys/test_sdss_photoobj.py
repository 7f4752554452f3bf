"""read_photoobj on the committed photoObj cut-out (7 objects of run 94 / camcol 1 / field 12)."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from bliss.errors import BlissIOError, BlissValueError
from bliss.surveys.sdss.photoobj import find_photoobj, photo_flag, read_photoobj
from tests.unit.surveys.conftest import (
    CAMCOL,
    CUTOUT_STAR,
    FIELD,
    RUN,
    SDSS_CUTOUTS,
    edit_fits,
    field_file,
)

PHOTOOBJ = "photoObj-000094-1-0012.fits"
#: the cut-out's objects (full-frame OBJC_ROWC, OBJC_COLC): 2 parents (a deblended blend, and the
#: bright star's first-pass BRIGHT copy), the bright star, the blend's children (a galaxy and a
#: star-typed object with negative r flux) and 2 faint stars
N_OBJECTS, N_PARENTS = 7, 2


@pytest.fixture(scope="module")
def table():
    return read_photoobj(find_photoobj(SDSS_CUTOUTS, RUN, CAMCOL, FIELD), shape=(192, 192))


def _frame_wcs() -> WCS:
    header = fits.getheader(field_file(SDSS_CUTOUTS, "frame-r-000094-1-0012.fits.bz2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header).celestial


def test_parents_are_dropped_and_types_parsed(table):
    assert len(table) == N_OBJECTS - N_PARENTS
    assert sorted(table["source_type"].tolist()) == [0, 0, 0, 0, 1]
    assert set(table["objc_type"].tolist()) == {3, 6}
    assert not table["ignore"].any()
    # the galaxy and its sibling; the bright star's "parent" is its first-pass BRIGHT copy
    assert table["child"].sum() == 2
    assert table["run_primary"].all()
    assert table.meta["RUN"] == RUN and table.meta["GALFLUX"] == "cmodel"


def test_bright_star_position_agrees_with_the_frame_wcs(table):
    """x, y (0-indexed, pixel centres on integers) = the r frame's WCS at RA/Dec, within 0.5 px."""
    star = table[np.argmax(table["flux_r"].value)]
    x, y = _frame_wcs().wcs_world2pix([star["ra"].value], [star["dec"].value], 0)
    assert abs(star["x"].value - x[0]) < 0.5
    assert abs(star["y"].value - y[0]) < 0.5
    # and with the windowed centroid measured on the image (tests/unit/surveys/conftest.py)
    assert star["y"].value == pytest.approx(CUTOUT_STAR[0], abs=0.5)
    assert star["x"].value == pytest.approx(CUTOUT_STAR[1], abs=0.5)


def test_every_object_agrees_with_the_wcs(table):
    x, y = _frame_wcs().wcs_world2pix(table["ra"].value, table["dec"].value, 0)
    assert np.abs(table["x"].value - x).max() < 0.1
    assert np.abs(table["y"].value - y).max() < 0.1


def test_fluxes_are_psf_for_stars_and_cmodel_or_model_for_galaxies(table):
    with fits.open(field_file(SDSS_CUTOUTS, PHOTOOBJ)) as hdus:
        raw = hdus[1].data
        leaf = raw[raw["NCHILD"] == 0]
    star = leaf["OBJC_TYPE"] == 6
    by_id = {str(o).strip(): i for i, o in enumerate(leaf["OBJID"])}
    order = [by_id[o] for o in table["objid"]]
    expected = np.where(star[:, None], leaf["PSFFLUX"], leaf["CMODELFLUX"])[order]
    fluxes = np.stack([table[f"flux_{b}"].value for b in "ugriz"], -1)
    np.testing.assert_allclose(fluxes, expected, rtol=1e-6)
    assert str(table["flux_r"].unit) == "nmgy"
    model = read_photoobj(field_file(SDSS_CUTOUTS, PHOTOOBJ), galaxy_flux="model")
    assert model["objid"].tolist() == table["objid"].tolist()
    galaxy = np.asarray(model["source_type"] == 1)
    np.testing.assert_allclose(
        model["flux_r"].value[galaxy], leaf["MODELFLUX"][order][galaxy, 2], rtol=1e-6
    )


def test_flags_ignore_and_shape(table):
    assert photo_flag(table, "CHILD").tolist() == table["child"].tolist()
    ignored = read_photoobj(field_file(SDSS_CUTOUTS, PHOTOOBJ), ignore_flags=["CHILD"])
    assert ignored["ignore"].tolist() == ignored["child"].tolist()
    small = read_photoobj(field_file(SDSS_CUTOUTS, PHOTOOBJ), shape=(100, 100))
    assert len(small) == 2  # the blend's two children
    assert (small["x"].value < 99.5).all() and (small["y"].value < 99.5).all()


def test_missing_file_names_the_path(tmp_path: Path):
    with pytest.raises(BlissIOError, match="photoObj-000094-1-0012"):
        find_photoobj(tmp_path, RUN, CAMCOL, FIELD)
    with pytest.raises(BlissIOError, match="does not exist"):
        read_photoobj(tmp_path / PHOTOOBJ)


def test_unreadable_file_names_the_path(tmp_path: Path):
    path = tmp_path / PHOTOOBJ
    path.write_bytes(b"not a FITS file" * 300)
    with pytest.raises(BlissIOError, match=str(path)):
        read_photoobj(path)


def test_missing_columns_and_wrong_field_are_errors(cutout_copy: Path):
    path = field_file(cutout_copy, PHOTOOBJ)
    with pytest.raises(BlissIOError, match="FIELD"):
        read_photoobj(path, ids=(RUN, CAMCOL, FIELD + 1))

    def drop_psfflux(hdus):
        hdus[1] = fits.BinTableHDU.from_columns(
            [c for c in hdus[1].columns if c.name != "PSFFLUX"], header=hdus[1].header
        )

    edit_fits(path, drop_psfflux)
    with pytest.raises(BlissIOError, match=r"lacks columns \['PSFFLUX'\]"):
        read_photoobj(path)


def test_bad_arguments():
    path = field_file(SDSS_CUTOUTS, PHOTOOBJ)
    with pytest.raises(BlissValueError, match="REF_BAND"):
        read_photoobj(path, band="i")
    with pytest.raises(BlissValueError, match="galaxy_flux"):
        read_photoobj(path, galaxy_flux="petro")
    with pytest.raises(BlissValueError, match="SATURATED"):
        read_photoobj(path, ignore_flags=["SATURATED"])
