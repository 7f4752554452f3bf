"""Aperture corrections: the light of real stars' wings that a PSF model leaves out."""

import numpy as np
import pytest

from bliss.surveys.sdss import read_sdss_field
from bliss.surveys.sdss.aperture import MIN_STARS, aperture_correction
from tests.unit.surveys.conftest import CAMCOL, FIELD, RUN, SHARED_SDSS

PIXEL_ARCSEC = 0.396
HALF = 25  # 51 x 51 px PSF images, as in psField files
SKY = 500.0


def _moffat(fwhm_px: float, beta: float, drow: float = 0.0, dcol: float = 0.0) -> np.ndarray:
    alpha = fwhm_px / (2 * np.sqrt(2 ** (1 / beta) - 1))
    grid = np.arange(-HALF, HALF + 1)
    r2 = (grid[:, None] - drow) ** 2 + (grid[None, :] - dcol) ** 2
    image = (1 + r2 / alpha**2) ** -beta
    return image / image.sum()


def _star(wing: float, drow: float, dcol: float) -> np.ndarray:
    """A star of unit flux: the PSF core, plus a share ``wing`` of its light in a broad halo."""
    return (1 - wing) * _moffat(3.3, 3.5, drow, dcol) + wing * _moffat(14.0, 2.0, drow, dcol)


def _field(wing: float, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """30 bright stars and 6 round galaxies (sigma 5 px) on a 640 x 640 px sky, Poisson noise."""
    rng = np.random.default_rng(seed)
    light = np.zeros((640, 640))
    stars = []
    for index, (row, col) in enumerate(
        (r, c) for r in range(60, 600, 105) for c in range(60, 600, 105)
    ):
        drow, dcol = rng.uniform(-0.5, 0.5, 2)
        if index % 6 == 5:  # every sixth place holds a galaxy
            grid = np.arange(-HALF, HALF + 1)
            blob = np.exp(-((grid[:, None] - drow) ** 2 + (grid[None, :] - dcol) ** 2) / 50.0)
            light[row - HALF : row + HALF + 1, col - HALF : col + HALF + 1] += (
                3e5 * blob / blob.sum()
            )
            continue
        light[row - HALF : row + HALF + 1, col - HALF : col + HALF + 1] += 3e5 * _star(
            wing, drow, dcol
        )
        stars.append((row + drow, col + dcol))
    return rng.poisson(light + SKY).astype(np.float64), stars


def _psf(row: float, col: float) -> np.ndarray:
    return _moffat(3.3, 3.5)


def _noise_free_factor(wing: float) -> float:
    """The correction of one noise-free star: what the median over noisy stars should give."""
    light = np.zeros((101, 101))
    light[50 - HALF : 50 + HALF + 1, 50 - HALF : 50 + HALF + 1] = 1e6 * _star(wing, 0.0, 0.0)
    sky = np.zeros_like(light)
    stars = np.array([[50.0, 50.0]] * MIN_STARS)
    return aperture_correction(light, sky, _psf, PIXEL_ARCSEC, stars=stars).factor


@pytest.mark.parametrize("wing", [0.0, 0.05])
def test_the_correction_recovers_the_missing_wing_light_from_stars_only(wing: float) -> None:
    image, stars = _field(wing)
    correction = aperture_correction(image, np.full_like(image, SKY), _psf, PIXEL_ARCSEC)
    expected = _noise_free_factor(wing)
    assert correction.n_stars == len(stars) == 30  # the six galaxies are left out
    assert correction.factor == pytest.approx(expected, abs=0.006)
    if wing:  # a 5 % halo, of which the 7.43" aperture holds ~70 %
        assert 1.025 < expected < 1.05
    else:
        assert expected == pytest.approx(1.0, abs=0.003)


def test_too_few_stars_leave_the_fluxes_alone() -> None:
    image, _ = _field(0.05)
    image[:, 120:] = np.nan  # masked: only the stars at (60, 60), (165, 60), (270, 60) left
    image[300:] = np.nan
    correction = aperture_correction(image, np.full_like(image, SKY), _psf, PIXEL_ARCSEC)
    assert correction.n_stars < MIN_STARS
    assert correction.factor == 1.0


@pytest.mark.skipif(not SHARED_SDSS.exists(), reason="needs ../shared/data/sdss")
def test_field_94_1_12_needs_four_percent_in_r() -> None:
    field = read_sdss_field(SHARED_SDSS, RUN, CAMCOL, FIELD, bands=("r",))
    correction = aperture_correction(
        field.images[0],
        field.background[0],
        lambda row, col: field.psf_image("r", row, col),
        PIXEL_ARCSEC,
    )
    # 33 stars gave 1.045 +- 0.012 (half the interquartile range) on 2026-11-25
    assert correction.n_stars >= 20
    assert 1.03 < correction.factor < 1.06
