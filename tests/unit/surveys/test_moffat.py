"""fit_moffat_fwhm_arcsec and write_psf_header: PSF models as the predictor's PSF_FWHM / PSF_BETA."""

from pathlib import Path

import galsim
import numpy as np
import pytest
from astropy.io import fits

from bliss.errors import BlissIOError, BlissValueError
from bliss.surveys import ParametricSurvey
from bliss.surveys.fits_reader import read_fits_image
from bliss.surveys.moffat import (
    add_halo,
    fit_moffat_fwhm_arcsec,
    fwhm_map_arcsec,
    write_psf_header,
)
from bliss.surveys.psfex import DECAM_PIXEL_SCALE_ARCSEC, PsfexPsf
from bliss.surveys.sdss import SdssPsf

PSFEX_FILE = Path(__file__).parents[2] / "data" / "psf" / "DECam_00154912_12_psfcat.psf"
SCALE = DECAM_PIXEL_SCALE_ARCSEC


@pytest.fixture(scope="module")
def psf() -> PsfexPsf:
    return PsfexPsf.from_file(PSFEX_FILE, "Y")


@pytest.mark.parametrize("beta", [2.5, 3.5, 4.5])
@pytest.mark.parametrize("fwhm", [0.6, 1.0, 1.6])
def test_the_fit_recovers_a_drawn_moffat(beta, fwhm):
    star = galsim.Moffat(beta=beta, fwhm=fwhm).drawImage(nx=31, ny=31, scale=SCALE).array
    assert fit_moffat_fwhm_arcsec(5.0 * star, SCALE, beta) == pytest.approx(fwhm, rel=1e-3)


def test_a_wider_beta_fits_a_narrower_core(psf):
    image = psf.image(*psf.polynomial_origin)
    fits_by_beta = [fit_moffat_fwhm_arcsec(image, SCALE, beta) for beta in (2.5, 3.5, 4.5)]
    assert fits_by_beta == sorted(fits_by_beta)
    assert fits_by_beta[1] == pytest.approx(psf.fwhm_arcsec(*psf.polynomial_origin, "moffat"))


@pytest.mark.parametrize(
    ("image", "scale", "beta", "message"),
    [
        (np.ones(25), SCALE, 3.5, r"shape \(25,\)"),
        (np.zeros((5, 5)), SCALE, 3.5, "sum 0"),
        (np.ones((5, 5)), 0.0, 3.5, "pixel_scale_arcsec=0.0"),
        (np.ones((5, 5)), SCALE, 1.0, "beta=1.0"),
    ],
)
def test_bad_fit_inputs_raise(image, scale, beta, message):
    with pytest.raises(BlissValueError, match=message):
        fit_moffat_fwhm_arcsec(image, scale, beta)


def test_write_psf_header_prepares_a_predict_input(psf, tmp_path):
    path = tmp_path / "des_y.fits"
    image = fits.ImageHDU(np.full((64, 48), 500.0, dtype=np.float32), name="Y")
    image.header["MAGZERO"] = 30.0
    fits.HDUList([fits.PrimaryHDU(), image]).writeto(path)
    fwhm = write_psf_header(path, psf, hdu="Y", position=psf.polynomial_origin)
    assert fwhm == pytest.approx(psf.fwhm_arcsec(*psf.polynomial_origin, method="moffat"))
    header = fits.getheader(path, "Y")
    assert header["PSF_FWHM"] == pytest.approx(fwhm, abs=1e-4) and header["PSF_BETA"] == 3.5
    survey = ParametricSurvey("des", ["Y"], "Y", SCALE, 3.5, {"Y": 0.9}, {"Y": 100.0}, {"Y": 30.0})
    with pytest.warns(UserWarning, match="no celestial WCS"):
        read = read_fits_image(path, survey)
    assert read.psf_fwhm_arcsec[0] == pytest.approx(fwhm, abs=1e-4)
    # without a position, the centre of the HDU's image
    centre = write_psf_header(path, psf, hdu=1, beta=2.5)
    assert centre == pytest.approx(psf.fwhm_arcsec(31.5, 23.5, method="moffat", beta=2.5))
    assert fits.getheader(path, 1)["PSF_BETA"] == 2.5


def test_write_psf_header_errors_name_the_file_and_hdu(psf, tmp_path):
    with pytest.raises(BlissIOError, match="nothere.fits does not exist"):
        write_psf_header(tmp_path / "nothere.fits", psf)
    path = tmp_path / "empty.fits"
    fits.PrimaryHDU().writeto(path)
    with pytest.raises(BlissIOError, match="no HDU 'G'"):
        write_psf_header(path, psf, hdu="G")
    with pytest.raises(BlissIOError, match="holds no 2-D image; pass position"):
        write_psf_header(path, psf)


def test_write_psf_header_takes_any_psf_model(tmp_path):
    yy, xx = np.mgrid[-12:13, -12:13]
    sdss = SdssPsf("r", np.exp(-(xx**2 + yy**2) / 8.0)[None], np.ones((1, 1, 1)))
    path = tmp_path / "sdss_r.fits"
    fits.PrimaryHDU(np.zeros((30, 30), dtype=np.float32)).writeto(path)
    fwhm = write_psf_header(path, sdss)
    assert fwhm == pytest.approx(fit_moffat_fwhm_arcsec(sdss.image(14.5, 14.5), 0.396))
    assert fits.getheader(path)["PSF_FWHM"] == pytest.approx(fwhm, abs=1e-4)


def test_fwhm_map_interpolates_the_lattice_and_refuses_one_place():
    places = []
    fwhm_map = fwhm_map_arcsec(lambda r, c: places.append((r, c)) or 1.0 + 0.01 * r, (40, 10), 4)
    assert len(places) == 16 and fwhm_map.shape == (40, 10)
    assert np.allclose(fwhm_map[:, 3], 1.0 + 0.01 * np.arange(40), atol=1e-5)  # exact for linear
    with pytest.raises(BlissValueError, match="grid=1"):
        fwhm_map_arcsec(lambda r, c: 1.0, (40, 10), 1)


def test_the_fwhm_map_is_the_bilinear_interpolation_of_the_lattice():
    """Against scipy's interpolator, extrapolation beyond the outer places included."""
    from scipy.interpolate import RegularGridInterpolator

    rng = np.random.default_rng(3)
    values = rng.uniform(1.0, 2.0, (5, 5))
    shape = (61, 83)
    rows = (np.arange(5) + 0.5) * shape[0] / 5 - 0.5
    cols = (np.arange(5) + 0.5) * shape[1] / 5 - 0.5
    index = {(float(r), float(c)): (i, j) for i, r in enumerate(rows) for j, c in enumerate(cols)}
    fwhm_map = fwhm_map_arcsec(lambda r, c: values[index[(r, c)]], shape, 5)
    reference = RegularGridInterpolator((rows, cols), values, bounds_error=False, fill_value=None)
    pixels = np.stack(np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij"), -1)
    assert np.allclose(fwhm_map, reference(pixels), atol=1e-6)


@pytest.mark.parametrize("beta", [1.5, 3.5, 6.0])
def test_the_fit_agrees_with_a_search_over_every_width(beta):
    """The search starts near the effective width; a PSF far from a Moffat of the assumed beta
    (here Moffats of other betas and a Gaussian) must give the same best fit as the widest
    search."""
    from scipy import optimize

    star = galsim.Moffat(beta=beta, fwhm=1.1).drawImage(nx=33, ny=33, scale=0.396).array
    for image in (star, galsim.Gaussian(fwhm=2.0).drawImage(nx=33, ny=33, scale=0.396).array):
        psf = image / image.sum()

        def residual(fwhm_px: float, psf: np.ndarray = psf) -> float:
            model = galsim.Moffat(beta=3.5, fwhm=fwhm_px).drawImage(nx=33, ny=33, scale=1.0).array
            return float(np.sum((psf - model / model.sum()) ** 2))

        widest = optimize.minimize_scalar(
            residual, bounds=(0.5, 33.0), method="bounded", options={"xatol": 1e-4}
        )
        assert fit_moffat_fwhm_arcsec(image, 0.396) == pytest.approx(widest.x * 0.396, abs=1e-3)


def test_add_halo_reuses_its_halo_without_sharing_the_result() -> None:
    point = np.zeros((31, 31))
    point[15, 15] = 1.0
    first = add_halo(point, 0.05, 8.0, 2.0, 0.396)
    first[:] = 0.0  # the caller owns its result: the cached halo must not change
    second = add_halo(point, 0.05, 8.0, 2.0, 0.396)
    halo = galsim.Moffat(beta=2.0, fwhm=8.0).drawImage(nx=31, ny=31, scale=0.396).array
    expected = 0.95 * point + 0.05 * halo / halo.sum()
    assert np.allclose(second, expected, atol=1e-12)


def test_add_halo_moves_light_into_the_wings() -> None:
    point = np.zeros((51, 51), dtype=np.float32)
    point[25, 25] = 1.0
    assert np.array_equal(add_halo(point, 0.0, 12.0, 2.0, 0.396), point)
    haloed = add_halo(point, 0.06, 12.0, 2.0, 0.396)
    assert haloed.dtype == np.float32 and haloed.sum() == pytest.approx(1.0, abs=1e-6)
    assert haloed[25, 25] == pytest.approx(0.94, abs=0.002)  # the halo is too broad to add much
    rows, cols = np.indices(haloed.shape) - 25
    beyond_3_arcsec = haloed[np.hypot(rows, cols) * 0.396 > 3.0].sum()
    assert 0.03 < beyond_3_arcsec < 0.06  # most of the halo's light lies beyond the core


@pytest.mark.parametrize(
    ("fraction", "fwhm", "beta"), [(1.0, 12.0, 2.0), (0.1, 0.0, 2.0), (0.1, 8.0, 1.0)]
)
def test_add_halo_rejects_bad_parameters(fraction: float, fwhm: float, beta: float) -> None:
    with pytest.raises(BlissValueError, match="PSF halo fraction"):
        add_halo(np.ones((5, 5)) / 25, fraction, fwhm, beta, 0.396)
