"""The Python snippets of docs/surveys.md run on DES- and LSST-like files and give known answers."""

import os
import re
import shutil
from pathlib import Path

import galsim
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from bliss.surveys import ParametricSurvey
from bliss.surveys.fits_reader import read_fits_image
from bliss.surveys.moffat import fit_moffat_fwhm_arcsec
from bliss.surveys.psfex import PsfexPsf

ROOT = Path(__file__).parents[2]
PSFEX_FILE = ROOT / "tests" / "data" / "psf" / "DECam_00154912_12_psfcat.psf"
DES_BANDS = ("g", "r", "i", "z", "Y")
DES_SKY = {"g": 437, "r": 1202, "i": 2512, "z": 6918, "Y": 4786}  # as in the doc and des.yaml
DES_SIGMA, LSST_VARIANCE, LSST_FWHM = 3.0, 25.0, 0.8
NJY_PER_COUNT_27 = 3631e9 * 10 ** (-0.4 * 27.0)  # a coadd at zero point 27


def _wcs_header(scale_arcsec: float) -> fits.Header:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [60.0, -40.0]
    wcs.wcs.crpix = [50.0, 50.0]
    wcs.wcs.cdelt = [-scale_arcsec / 3600, scale_arcsec / 3600]
    return wcs.to_header()


def _stars(rng, shape, fwhm_arcsec, scale_arcsec, n_stars, flux) -> np.ndarray:  # noqa: ANN001
    image = galsim.ImageD(shape[1], shape[0], scale=scale_arcsec)
    moffat = galsim.Moffat(beta=3.5, fwhm=fwhm_arcsec)
    for _ in range(n_stars):
        x, y = rng.uniform(15, shape[1] - 15), rng.uniform(15, shape[0] - 15)
        stamp = moffat.withFlux(flux * rng.uniform(0.5, 3)).drawImage(
            nx=31, ny=31, scale=scale_arcsec, offset=(x % 1, y % 1)
        )
        stamp.setCenter(int(x) + 1, int(y) + 1)
        bounds = stamp.bounds & image.bounds
        image[bounds] += stamp[bounds]
    return image.array


def _write_inputs(folder: Path) -> None:
    """DES coadd tiles (SCI/MSK/WGT, MAGZERO 30) + PSFEx files; one LSST r-band deepCoadd."""
    rng = np.random.default_rng(0)
    for band in DES_BANDS:
        shape = (120, 100)
        sci = _stars(rng, shape, 1.0, 0.263, 10, 2e4) + rng.normal(0, DES_SIGMA, shape)
        header = _wcs_header(0.263)
        header["MAGZERO"] = 30.0
        mask = np.zeros(shape, np.int32)
        mask[5, 5] = 4
        weight = np.full(shape, 1 / DES_SIGMA**2, np.float32)
        fits.HDUList(
            [
                fits.PrimaryHDU(),
                fits.ImageHDU(sci.astype(np.float32), header, name="SCI"),
                fits.ImageHDU(mask, name="MSK"),
                fits.ImageHDU(weight, name="WGT"),
            ]
        ).writeto(folder / f"tile_{band}.fits")
        shutil.copy(PSFEX_FILE, folder / f"tile_{band}_psfcat.psf")
    shape = (160, 160)
    image = _stars(rng, shape, LSST_FWHM, 0.2, 40, 5e4) + rng.normal(0, 5.0, shape)
    mask_header = fits.Header(
        [("MP_BAD", 0), ("MP_SAT", 1), ("HIERARCH MP_DETECTED", 5), ("HIERARCH MP_NO_DATA", 8)]
    )
    mask = np.zeros(shape, np.int32)
    mask[:3] = 1 << 8
    calib = fits.BinTableHDU.from_columns(
        [
            fits.Column("calibrationMean", "D", array=[NJY_PER_COUNT_27]),
            fits.Column("isConstant", "L", array=[True]),
        ]
    )
    other_table = fits.BinTableHDU.from_columns([fits.Column("id", "K", array=[1])])
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(image.astype(np.float32), _wcs_header(0.2)),
            fits.ImageHDU(mask, mask_header),
            fits.ImageHDU(np.full(shape, LSST_VARIANCE, np.float32)),
            other_table,
            calib,
        ]
    ).writeto(folder / "deepCoadd_r.fits")


def test_the_survey_snippets_write_valid_predict_inputs(tmp_path, monkeypatch):
    _write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "surveys.md").read_text(), re.S)
    assert len(blocks) == 5
    namespace: dict = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"docs/surveys.md block {index}", "exec"), namespace)
    assert os.path.exists("tile_bliss.fits") and os.path.exists("coadd_bliss.fits")
    assert namespace["scale"] == pytest.approx(0.263, rel=1e-3)

    presets = dict.fromkeys(DES_BANDS, 1.0)
    des = ParametricSurvey("des", DES_BANDS, "r", 0.263, 3.5, presets, presets, presets)
    tile = read_fits_image("tile_bliss.fits", des)
    for index, band in enumerate(DES_BANDS):
        gain = np.sqrt(DES_SKY[band] / DES_SIGMA**2)
        assert tile.magzero[index] == pytest.approx(30.0 + 2.5 * np.log10(gain))
        assert float(tile.background[index].mean()) == pytest.approx(DES_SKY[band], rel=1e-5)
    psf = PsfexPsf.from_file(PSFEX_FILE, "Y")
    centre = fit_moffat_fwhm_arcsec(psf.image(59.5, 49.5), 0.263)
    np.testing.assert_allclose(tile.psf_fwhm_arcsec, centre, atol=1e-4)
    # the <band>_FWHM maps: the same fit at every pixel, interpolated from a 5 x 5 lattice
    assert tile.psf_fwhm_map.shape == tile.images.shape
    middle = tile.psf_fwhm_map[:, 59:61, 49:51].mean(axis=(1, 2))
    np.testing.assert_allclose(middle, centre, rtol=0.01)
    assert np.isnan(tile.images).sum() == len(DES_BANDS)  # the one masked pixel per band

    lsst = ParametricSurvey("lsst", ["r"], "r", 0.2, 3.5, {"r": 1.0}, {"r": 1.0}, {"r": 1.0})
    coadd = read_fits_image("coadd_bliss.fits", lsst)
    gain = np.sqrt(871 / LSST_VARIANCE)
    assert coadd.magzero[0] == pytest.approx(27.0 + 2.5 * np.log10(gain))
    assert coadd.psf_fwhm_arcsec[0] == pytest.approx(LSST_FWHM, rel=0.05)  # stacked stars
    assert np.isnan(coadd.images).sum() == 3 * 160  # the NO_DATA rows
