import numpy as np
import pytest
from astropy.io import fits

from bliss.errors import BlissConfigError, BlissIOError, BlissWarning
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


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_an_empty_band_is_an_error(tmp_path, fill):
    path = tmp_path / "z.fits"
    hdus = [fits.PrimaryHDU()]
    for band in ("g", "r"):
        card = simple_wcs(16, 16, 0.4).to_header()
        card["MAGZERO"] = 29.0
        data = np.full((16, 16), fill, np.float32) if band == "r" else np.full((16, 16), 150.0)
        hdus.append(fits.ImageHDU(data.astype(np.float32), header=card, name=band))
    fits.HDUList(hdus).writeto(path)
    with pytest.raises(BlissIOError, match="z.fits HDU R: no data"):
        read_fits_image(path, SURVEY)


def edit_bands(path, edit):
    """Apply ``edit(hdu)`` to every band HDU of ``path`` (and keep its extra HDUs)."""
    with fits.open(path, mode="update") as hdus:
        for hdu in hdus[1:]:
            if hdu.name in ("G", "R"):
                edit(hdu)


@pytest.mark.parametrize(
    ("bunit", "extra", "scale"),
    [
        ("adu", {"GAIN": 4.0}, 1 / 4.0),  # pixels in ADU, 4 electrons each
        ("ADU", {"GAIN": 2.5}, 1 / 2.5),
        ("nanomaggy", {}, 10 ** (0.4 * (22.5 - 29.0))),  # MAGZERO 29: nmgy per electron
        ("nmgy", {}, 10 ** (0.4 * (22.5 - 29.0))),
        ("electron", {}, 1.0),
    ],
)
def test_pixel_units_are_converted_to_electrons(tmp_path, bunit, extra, scale):
    reference = read_fits_image(write(tmp_path / "e.fits", bkg=True), SURVEY)
    path = write(tmp_path / "u.fits", bkg=True)

    def to_unit(hdu):
        hdu.data = (hdu.data * scale).astype(np.float32)
        hdu.header["BUNIT"] = bunit
        hdu.header.update(extra)

    edit_bands(path, to_unit)
    with fits.open(path, mode="update") as hdus:  # the sky map is in the image's unit too
        for name in ("G_BKG", "R_BKG"):
            hdus[name].data = (hdus[name].data * scale).astype(np.float32)
    image = read_fits_image(path, SURVEY)
    np.testing.assert_allclose(image.images, reference.images, rtol=1e-5)
    np.testing.assert_allclose(image.background, reference.background, rtol=1e-5)
    assert image.magzero.tolist() == reference.magzero.tolist()


@pytest.mark.parametrize(
    ("cards", "match"),
    [
        ({"BUNIT": "Jy/beam"}, "BUNIT='Jy/beam' is not a pixel unit"),
        ({"BUNIT": "adu"}, "BUNIT='adu' but GAIN is None"),
        ({"BUNIT": "adu", "GAIN": 0.0}, "BUNIT='adu' but GAIN is 0.0"),
    ],
)
def test_unknown_units_and_adu_without_gain_are_refused(tmp_path, cards, match):
    path = write(tmp_path / "a.fits")
    edit_bands(path, lambda hdu: hdu.header.update(cards))
    with pytest.raises(BlissIOError, match=f"a.fits HDU G: {match}"):
        read_fits_image(path, SURVEY)


def subtracted(path, sky=150.0):
    edit_bands(path, lambda hdu: setattr(hdu, "data", (hdu.data - sky).astype(np.float32)))
    return path


def test_a_sky_subtracted_image_read_as_included_is_refused(tmp_path):
    path = subtracted(write(tmp_path / "a.fits"))
    with pytest.raises(BlissIOError, match="predict.sky=included, but the pixels look sky-sub"):
        read_fits_image(path, SURVEY)


def test_a_sky_included_image_read_as_subtracted_is_refused(tmp_path):
    with pytest.raises(BlissIOError, match="predict.sky=subtracted, but the pixels still hold"):
        read_fits_image(write(tmp_path / "a.fits"), SURVEY, sky="subtracted")


def test_unknown_sky_convention(tmp_path):
    with pytest.raises(BlissConfigError, match="predict.sky='none'"):
        read_fits_image(write(tmp_path / "a.fits"), SURVEY, sky="none")


def test_the_subtracted_sky_of_a_bkg_hdu_is_added_back_exactly(tmp_path):
    included = read_fits_image(write(tmp_path / "i.fits", bkg=True), SURVEY)
    image = read_fits_image(
        subtracted(write(tmp_path / "s.fits", bkg=True)), SURVEY, sky="subtracted"
    )
    np.testing.assert_allclose(image.images, included.images)
    np.testing.assert_allclose(image.background, 150.0)


@pytest.mark.parametrize("kind", ["none", "var", "wht"])
def test_without_bkg_the_added_sky_is_the_noise_variance(tmp_path, kind):
    """Poisson(150) pixels: the sky whose variance is the noise is 150 electrons."""
    included = read_fits_image(write(tmp_path / "i.fits", shape=(96, 96)), SURVEY)
    path = subtracted(write(tmp_path / "s.fits", shape=(96, 96)))
    if kind != "none":
        # a variance plane in ADU**2 of a 2-electron-per-ADU image: the reader converts it
        edit_bands(path, lambda hdu: hdu.header.update({"BUNIT": "adu", "GAIN": 2.0}))
        edit_bands(path, lambda hdu: setattr(hdu, "data", (hdu.data / 2.0).astype(np.float32)))
        variance = np.full((96, 96), 150.0 / 4.0, np.float32)
        plane = variance if kind == "var" else 1 / variance
        with fits.open(path, mode="append") as hdus:
            for band in ("G", "R"):
                hdus.append(fits.ImageHDU(plane, name=f"{band}_{kind.upper()}"))
    image = read_fits_image(path, SURVEY, sky="subtracted")
    added = image.images - included.images + 150.0
    if kind == "none":  # from the pixels' scatter: sqrt(2 / 2304) = 3 % per 48-px mesh
        assert abs(float(added.mean()) / 150.0 - 1) < 0.03
        assert np.all(np.abs(added / 150.0 - 1) < 0.15)
    else:  # exactly the variance plane's
        np.testing.assert_allclose(added, 150.0, rtol=1e-4)
    # the sky level follows the image: the included one's plus what was added beyond 150
    np.testing.assert_allclose(image.background, included.background + added - 150.0, atol=5.0)


def test_both_variance_and_weight_is_ambiguous(tmp_path):
    path = subtracted(write(tmp_path / "s.fits"))
    with fits.open(path, mode="append") as hdus:
        hdus.append(fits.ImageHDU(np.ones((32, 24), np.float32), name="R_VAR"))
        hdus.append(fits.ImageHDU(np.ones((32, 24), np.float32), name="R_WHT"))
    with pytest.raises(BlissIOError, match="both R_VAR and R_WHT"):
        read_fits_image(path, SURVEY, sky="subtracted")


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


def test_pixels_at_the_saturate_level_become_missing_and_saturated(tmp_path):
    path = write(tmp_path / "img.fits")
    with fits.open(path, mode="update") as hdus:
        hdus["r"].header["SATURATE"] = 160.0  # in the HDU's units: about 20 % of Poisson(150)
        hdus["r"].data[5, 5] = 5000.0
        raw = hdus["r"].data.copy()
    image = read_fits_image(path, SURVEY)
    r = image.bands.index("r")
    expected = raw >= 160.0
    assert image.saturated is not None and np.array_equal(image.saturated[r], expected)
    assert not image.saturated[image.bands.index("g")].any()  # no SATURATE: none known
    assert np.isnan(image.images[r][expected]).all()
    assert np.isfinite(image.images[r][~expected]).all()


def test_without_saturate_nothing_is_known_and_a_bad_level_is_refused(tmp_path):
    path = write(tmp_path / "img.fits")
    assert read_fits_image(path, SURVEY).saturated is None
    with fits.open(path, mode="update") as hdus:
        hdus["g"].header["SATURATE"] = -1.0
    with pytest.raises(BlissIOError, match=r"HDU G: SATURATE=-1.0; expected the positive"):
        read_fits_image(path, SURVEY)
