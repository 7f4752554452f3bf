"""PsfexPsf: reading a DES/DECam PSFEx model, evaluating it, feeding it to the simulator and predictor."""

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits

from bliss.catalog import GALAXY_KEYS, TileCatalog
from bliss.errors import BlissIOError, BlissValueError
from bliss.protocols import PsfModel
from bliss.simulator.conditions import ObservingConditions
from bliss.simulator.prior import CatalogPrior
from bliss.simulator.render import GalsimRenderer, image_psf
from bliss.simulator.simulate import ImageSimulator
from bliss.surveys import ParametricSurvey
from bliss.surveys.base import psf_images_at
from bliss.surveys.psfex import DECAM_PIXEL_SCALE_ARCSEC, PsfexPsf
from bliss.surveys.sdss import SdssPsf

#: a real DES single-epoch model: exposure 154912, CCD 12, Y band, 2048 x 4096 px, degree 2
PSFEX_FILE = Path(__file__).parents[2] / "data" / "psf" / "DECam_00154912_12_psfcat.psf"
CCD_SHAPE = (4096, 2048)
SCALE = DECAM_PIXEL_SCALE_ARCSEC


@pytest.fixture(scope="module")
def psf() -> PsfexPsf:
    return PsfexPsf.from_file(PSFEX_FILE, "Y")


def _edited_copy(tmp_path: Path, edit) -> Path:  # noqa: ANN001
    """A copy of the DES model with ``edit(psf_data_hdu)`` applied."""
    with fits.open(PSFEX_FILE) as hdus:
        edit(hdus[1])
        path = tmp_path / "edited.psf"
        hdus.writeto(path)
    return path


def _gaussian_basis(sigma_px: float, size: int = 25) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - size // 2
    return np.exp(-(xx**2 + yy**2) / (2 * sigma_px**2))


def test_the_des_file_is_read(psf):
    assert psf.degree == 2 and psf.basis.shape == (6, 25, 25)
    assert psf.sampling == pytest.approx(0.97556132)
    assert psf.polynomial_origin == pytest.approx((2047.2938, 1023.3128), abs=1e-4)
    assert psf.psfex_fwhm_px == pytest.approx(4.58513832)
    assert isinstance(psf, PsfModel)
    assert "degree=2" in repr(psf)


def test_at_the_polynomial_origin_the_model_is_the_constant_term(psf):
    origin = psf.polynomial_origin
    np.testing.assert_allclose(psf.weights(*origin), [1, 0, 0, 0, 0, 0], atol=1e-12)
    np.testing.assert_array_equal(psf.model_image(*origin), psf.basis[0])
    # one scaled unit away in X_IMAGE the terms are 1, u, u^2, v, uv, v^2 = 1, 1, 1, 0, 0, 0
    shifted = psf.weights(origin[0], origin[1] + psf.x_scale)
    np.testing.assert_allclose(shifted, [1, 1, 1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(
        psf.model_image(origin[0], origin[1] + psf.x_scale), psf.basis[:3].sum(0)
    )


def test_resampling_at_unit_sampling_returns_the_model_exactly():
    basis = _gaussian_basis(2.0)[None]
    unit = PsfexPsf("r", basis, 0, 0.0, 1.0, 0.0, 1.0, sampling=1.0)
    np.testing.assert_allclose(unit.image(10.0, 10.0), basis[0] / basis[0].sum(), atol=1e-6)


def test_resampling_converts_model_pixels_to_image_pixels():
    """A Gaussian of sigma 4 model pixels at PSF_SAMP = 0.5 is sigma 2 image pixels."""
    coarse = PsfexPsf("r", _gaussian_basis(4.0, 41)[None], 0, 0.0, 1.0, 0.0, 1.0, sampling=0.5)
    assert coarse.stamp_shape == (21, 21)
    expected_arcsec = 2.3548 * 2.0 * SCALE
    assert coarse.fwhm_arcsec(0.0, 0.0) == pytest.approx(expected_arcsec, rel=0.01)
    assert coarse.fwhm_arcsec(0.0, 0.0, method="half_max") == pytest.approx(
        expected_arcsec, rel=0.02
    )
    assert coarse.fwhm_arcsec(0.0, 0.0, method="moffat") < expected_arcsec  # Moffat wings


def test_image_has_unit_sum_is_centred_and_matches_the_basis(psf):
    origin = psf.polynomial_origin
    image = psf.image(*origin)
    assert image.shape == psf.stamp_shape == (25, 25)
    assert image.sum() == pytest.approx(1.0)
    assert np.unravel_index(image.argmax(), image.shape) == (12, 12)
    rows, cols = np.mgrid[:25, :25]
    assert abs((image * rows).sum() - 12) < 0.1 and abs((image * cols).sum() - 12) < 0.1
    # PSF_SAMP = 0.976 resamples the basis only a little
    constant = psf.basis[0] / psf.basis[0].sum()
    assert np.abs(image - constant).max() < 0.05 * constant.max()


def test_fwhm_is_a_decam_seeing_and_agrees_with_psfex(psf):
    origin = psf.polynomial_origin
    effective = psf.fwhm_arcsec(*origin)
    half_max = psf.fwhm_arcsec(*origin, method="half_max")
    moffat = psf.fwhm_arcsec(*origin, method="moffat")
    for fwhm in (effective, half_max, moffat):
        assert 0.8 < fwhm < 1.5
    # PSFEx's own estimate (header PSF_FWHM = 4.59 px) and the image header's median star FWHM
    # (4.52 px) bracket a ~10 % spread of FWHM definitions; ours is the half-maximum area
    assert half_max / SCALE == pytest.approx(psf.psfex_fwhm_px, rel=0.15)
    # a truncated 25 x 25 px model has thinner wings than a Moffat(3.5) of the same core
    assert moffat < half_max < effective
    assert psf.fwhm_arcsec(*origin, method="moffat", beta=2.5) < moffat
    with pytest.raises(BlissValueError, match="method='moments'"):
        psf.fwhm_arcsec(*origin, method="moments")
    with pytest.raises(BlissValueError, match="beta=1.0"):
        psf.fwhm_arcsec(*origin, method="moffat", beta=1.0)


def test_psf_varies_smoothly_across_the_ccd(psf):
    height, width = CCD_SHAPE
    centre = psf.image(*psf.polynomial_origin)
    corner = psf.image(0.0, 0.0)
    assert 1e-3 * centre.max() < np.abs(corner - centre).max() < 0.2 * centre.max()
    rows = np.linspace(0, height - 1, 17)
    fwhm = np.array([psf.fwhm_arcsec(row, 0.0) for row in rows])
    steps = np.abs(np.diff(fwhm))
    assert fwhm.max() - fwhm.min() > 0.01  # ~2 % over the CCD
    assert steps.max() < 0.01  # < 1 % per 256 px
    # a quadratic in the position: the second differences are constant
    np.testing.assert_allclose(np.diff(fwhm, 2), np.diff(fwhm, 2).mean(), atol=2e-4)


def test_a_constant_model_is_read(tmp_path):
    basis = _gaussian_basis(2.0).astype(np.float32)[None]
    column = fits.Column("PSF_MASK", format=f"{basis.size}E", dim="(25, 25, 1)", array=basis[None])
    table = fits.BinTableHDU.from_columns([column], name="PSF_DATA")
    for key, value in {
        "POLNAXIS": 0,
        "PSF_SAMP": 1.0,
        "PSFNAXIS": 3,
        "PSFAXIS1": 25,
        "PSFAXIS2": 25,
        "PSFAXIS3": 1,
    }.items():
        table.header[key] = value
    path = tmp_path / "constant.psf"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    constant = PsfexPsf.from_file(path, "g")
    assert constant.degree == 0 and constant.psfex_fwhm_px is None
    np.testing.assert_allclose(constant.image(0.0, 0.0), constant.image(3000.0, 100.0))


def test_missing_or_non_fits_files_name_the_file(tmp_path):
    missing = tmp_path / "nothere.psf"
    with pytest.raises(BlissIOError, match="nothere.psf does not exist"):
        PsfexPsf.from_file(missing, "r")
    text = tmp_path / "notes.psf"
    text.write_text("not a FITS file\n" * 200)
    with pytest.raises(BlissIOError, match="notes.psf could not be read"):
        PsfexPsf.from_file(text, "r")
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(image)
    with pytest.raises(BlissIOError, match="image.fits has no binary table with a PSF_MASK"):
        PsfexPsf.from_file(image, "r")


@pytest.mark.parametrize("key", ["POLZERO1", "PSF_SAMP", "POLDEG1"])
def test_a_missing_keyword_is_named(tmp_path, key):
    path = _edited_copy(tmp_path, lambda hdu: hdu.header.remove(key))
    with pytest.raises(BlissIOError, match=rf"edited.psf: PSF_DATA header lacks \['{key}'\]"):
        PsfexPsf.from_file(path, "r")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("POLDEG1", 3, r"PSFAXIS3=6 for POLDEG1=3; expected .* = 10"),
        ("PSFAXIS3", 10, r"PSFAXIS3=10 for POLDEG1=2"),
        ("POLNAXIS", 3, "POLNAXIS=3"),
        ("POLNAME1", "MAG_AUTO", "POLNAME1/2=.'MAG_AUTO'"),
        ("POLNGRP", 2, r"POLNGRP/POLGRP1/POLGRP2=\(2, 1, 1\)"),
        ("PSFAXIS1", 24, "PSF_MASK holds 3750 values"),
        ("PSF_SAMP", 0.0, "PSF_SAMP=0.0"),
    ],
)
def test_a_wrong_polynomial_layout_is_named(tmp_path, key, value, message):
    def edit(hdu) -> None:  # noqa: ANN001
        hdu.header[key] = value

    with pytest.raises(BlissIOError, match=message) as caught:
        PsfexPsf.from_file(_edited_copy(tmp_path, edit), "r")
    assert "edited.psf" in str(caught.value)


def test_bad_arrays_are_rejected():
    with pytest.raises(BlissValueError, match="k = .* = 6 polynomial terms"):
        PsfexPsf("r", np.ones((3, 5, 5)), 2, 0.0, 1.0, 0.0, 1.0)
    with pytest.raises(BlissValueError, match="sampling=0"):
        PsfexPsf("r", np.ones((1, 5, 5)), 0, 0.0, 1.0, 0.0, 1.0, sampling=0)
    negative = PsfexPsf("r", -np.ones((1, 5, 5)), 0, 0.0, 1.0, 0.0, 1.0)
    with pytest.raises(BlissValueError, match="sums to -25"):
        negative.image(0.0, 0.0)


def test_psf_images_at_feeds_psfex_and_psfield_models_alike(psf):
    yy, xx = np.mgrid[-12:13, -12:13]
    sdss = SdssPsf("r", np.exp(-(xx**2 + yy**2) / 8.0)[None], np.ones((1, 1, 1)))
    assert isinstance(sdss, PsfModel)
    images = psf_images_at({"Y": psf}, 100.0, 200.0, SCALE)
    np.testing.assert_array_equal(images["Y"], psf.image(100.0, 200.0))
    with pytest.raises(BlissValueError, match="pixel_scale_arcsec=0.396 but the survey has 0.263"):
        psf_images_at({"Y": psf, "r": sdss}, 100.0, 200.0, SCALE)


def test_the_renderer_reproduces_the_psfex_image(psf):
    """``image_psf`` divides out the pixel that rendering puts back: the round trip is exact."""
    image = psf.image(1000.0, 500.0)
    drawn = image_psf(image, SCALE).drawImage(nx=25, ny=25, scale=SCALE).array
    assert np.abs(drawn - image).max() < 0.01 * image.max()


def test_a_simulated_star_has_the_psfex_shape(psf, monkeypatch):
    """ImageSimulator(psf_images=...) with the PSFEx image: a noise-free star is flux x PSF."""
    fwhm = psf.fwhm_arcsec(*psf.polynomial_origin, method="moffat")
    survey = ParametricSurvey("des", ["Y"], "Y", SCALE, 3.5, {"Y": fwhm}, {"Y": 100.0}, {"Y": 30.0})
    colors = {"mean": {}, "slope": {}, "scatter": {}}
    prior = CatalogPrior(["Y"], "Y", SCALE, tile_slen=4, star_colors=colors, galaxy_colors=colors)
    simulator = ImageSimulator(
        survey,
        prior,
        GalsimRenderer(),
        ObservingConditions(survey, "Y"),
        image_size=48,
        noise="none",
        psf_images=psf_images_at({"Y": psf}, *psf.polynomial_origin, SCALE),
    )
    flux_nmgy = 100.0

    def one_star(n_images, n_tiles_h, n_tiles_w, generator):  # noqa: ANN001, ANN202
        shape = (1, n_tiles_h, n_tiles_w, 1)
        data = {key: torch.zeros(*shape, 1) for key in ("source_type", "fluxes", *GALAXY_KEYS)}
        data["n_sources"] = torch.zeros(shape[:3], dtype=torch.long)
        data["locs"] = torch.zeros(*shape, 2)
        centre = n_tiles_h // 2
        data["n_sources"][0, centre, centre] = 1
        data["locs"][0, centre, centre, 0] = 0.375  # 1.5 px into the tile: a pixel centre
        data["fluxes"][0, centre, centre, 0] = flux_nmgy
        return TileCatalog(4, data)

    monkeypatch.setattr(simulator.prior, "sample", one_star)
    out = simulator.simulate(1, seed=0)
    light = out["images"][0, 0].double().numpy() - 100.0
    electrons = flux_nmgy * 10 ** (0.4 * (30.0 - 22.5))
    row, col = np.unravel_index(light.argmax(), light.shape)
    stamp = light[row - 12 : row + 13, col - 12 : col + 13] / electrons
    expected = psf.image(*psf.polynomial_origin)
    assert stamp.sum() == pytest.approx(1.0, rel=0.01)
    assert np.abs(stamp - expected).max() < 0.01 * expected.max()


def test_simulator_psf_images_accepts_a_psfex_file(psf, tmp_path):
    """``simulator.psf_images={Y: model.psf}``: the model at its polynomial origin is used."""
    from bliss.cli.generate import build_simulator
    from tests.conftest import compose_config

    overrides = ["mode=generate", "survey=des", "simulator.image_size=16"]
    cfg = compose_config([*overrides, f"simulator.psf_images={{Y:{PSFEX_FILE}}}"], tmp_path)
    simulator = build_simulator(cfg)
    profile, nominal_fwhm = simulator.psf_images["Y"]
    drawn = profile.drawImage(nx=25, ny=25, scale=SCALE).array
    expected = psf.image(*psf.polynomial_origin)
    assert np.abs(drawn - expected).max() < 0.01 * expected.max()
    assert nominal_fwhm == cfg.survey.psf_fwhm_arcsec.Y
    assert simulator.simulate(1, seed=0)["images"].shape == (1, 5, 16, 16)
    missing = compose_config(
        [*overrides, f"simulator.psf_images={{Y:{tmp_path}/no.psf}}"], tmp_path
    )
    with pytest.raises(BlissIOError, match="no.psf does not exist"):
        build_simulator(missing)
