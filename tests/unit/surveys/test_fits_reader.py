import warnings

import numpy as np
import pytest
from astropy.io import fits

from bliss.errors import BlissIOError, BlissWarning
from bliss.simulator.field import simple_wcs
from bliss.surveys import ParametricSurvey
from bliss.surveys.fits_reader import read_fits_image

SURVEY = ParametricSurvey(
    "toy",
    ["g", "r"],
    "r",
    0.4,
    3.5,
    {"g": 1.4, "r": 1.3},
    {"g": 100.0, "r": 200.0},
    {"g": 29.0, "r": 29.5},
)


def write(
    path,
    bands=("g", "r"),
    shape=(32, 24),
    magzero=True,
    wcs=True,
    bkg=False,
    extra=None,
    order=None,
):
    header = simple_wcs(*shape, 0.4).to_header() if wcs else fits.Header()
    hdus = [fits.PrimaryHDU()]
    rng = np.random.default_rng(0)
    for band in order or bands:
        card = header.copy()
        if magzero:
            card["MAGZERO"] = 29.0
        card["PSF_FWHM"] = 1.5
        data = rng.poisson(150.0, size=shape if band != extra else (shape[0] + 1, shape[1])).astype(
            np.float32
        )
        hdus.append(fits.ImageHDU(data, header=card, name=band))
        if bkg:
            hdus.append(fits.ImageHDU(np.full(shape, 150.0, dtype=np.float32), name=f"{band}_BKG"))
    fits.HDUList(hdus).writeto(path)
    return path


def test_reads_bands_in_model_order_case_insensitively(tmp_path):
    path = write(tmp_path / "a.fits", bands=("R", "G"), order=("R", "G"), bkg=True)
    image = read_fits_image(path, SURVEY)
    assert image.bands == ("g", "r")
    assert image.images.shape == (2, 32, 24)
    assert np.allclose(image.background, 150.0)
    assert image.psf_fwhm_arcsec.tolist() == [1.5, 1.5]
    assert image.wcs is not None


def test_background_is_estimated_when_absent(tmp_path):
    image = read_fits_image(write(tmp_path / "a.fits"), SURVEY)
    # sep's mesh background of Poisson(150) noise: within a few percent of 150
    assert abs(float(np.median(image.background)) - 150.0) < 5.0


def test_not_fits(tmp_path):
    path = tmp_path / "x.fits"
    path.write_text("hello")
    with pytest.raises(BlissIOError, match="x.fits"):
        read_fits_image(path, SURVEY)


def test_missing_and_extra_band(tmp_path):
    with pytest.raises(BlissIOError, match=r"missing \['r'\]"):
        read_fits_image(write(tmp_path / "a.fits", bands=("g",)), SURVEY)
    with pytest.raises(BlissIOError, match=r"extra \['i'\]"):
        read_fits_image(write(tmp_path / "b.fits", bands=("g", "r", "i")), SURVEY)


def test_shapes_differ(tmp_path):
    with pytest.raises(BlissIOError, match="differs"):
        read_fits_image(write(tmp_path / "a.fits", extra="r"), SURVEY)


def test_no_magzero(tmp_path):
    with pytest.raises(BlissIOError, match="MAGZERO"):
        read_fits_image(write(tmp_path / "a.fits", magzero=False), SURVEY)


def test_no_wcs_warns(tmp_path):
    with pytest.warns(BlissWarning, match="no celestial WCS"):
        image = read_fits_image(write(tmp_path / "a.fits", wcs=False), SURVEY)
    assert image.wcs is None


def test_all_zero_image_warns(tmp_path):
    path = tmp_path / "z.fits"
    hdus = [fits.PrimaryHDU()]
    for band in ("g", "r"):
        card = simple_wcs(16, 16, 0.4).to_header()
        card["MAGZERO"] = 29.0
        hdus.append(fits.ImageHDU(np.zeros((16, 16), np.float32), header=card, name=band))
    fits.HDUList(hdus).writeto(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_fits_image(path, SURVEY)
    assert any("empty" in str(w.message) for w in caught)


def test_fwhm_map_hdu_is_read_and_other_bands_use_their_header(tmp_path):
    path = write(tmp_path / "a.fits")
    seeing = np.linspace(1.0, 2.0, 24, dtype=np.float32)[None].repeat(32, 0)
    with fits.open(path, mode="append") as hdus:
        hdus.append(fits.ImageHDU(seeing, name="R_FWHM"))
    image = read_fits_image(path, SURVEY)
    assert image.psf_fwhm_map.shape == (2, 32, 24)
    assert np.array_equal(image.psf_fwhm_map[1], seeing)
    assert np.all(image.psf_fwhm_map[0] == 1.5)  # g: its PSF_FWHM card everywhere


@pytest.mark.parametrize(
    ("values", "match"),
    [(np.ones((31, 24)), "shape"), (np.zeros((32, 24)), "positive, finite")],
)
def test_bad_fwhm_map(tmp_path, values, match):
    path = write(tmp_path / "a.fits")
    with fits.open(path, mode="append") as hdus:
        hdus.append(fits.ImageHDU(values.astype(np.float32), name="g_fwhm"))
    with pytest.raises(BlissIOError, match=f"HDU G_FWHM.*{match}"):
        read_fits_image(path, SURVEY)


def test_without_fwhm_maps_there_is_no_map(tmp_path):
    assert read_fits_image(write(tmp_path / "a.fits"), SURVEY).psf_fwhm_map is None
