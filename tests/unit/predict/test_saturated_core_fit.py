"""Saturated stars: one star per blob of saturated pixels, fitted on its wings."""

import numpy as np
import pytest
import torch

from bliss.catalog import FullCatalog
from bliss.predict.psf_model import MoffatShape, stamp_slices
from bliss.predict.saturated_stars import (
    recover_saturated_stars,
    saturated_blobs,
    with_saturated_stars,
)
from bliss.protocols import SurveyImage

SKY = 100.0
FWHM_PX = 3.5
LEVEL = 30_000.0  # counts (sky included) at which the detector saturates
HALF = 25


def _render(shape, stars, beta=3.5):
    """Moffat stars ``[(row, col, electrons), ...]`` on an image of ``shape`` (no sky)."""
    psf = MoffatShape(FWHM_PX, beta, fitted=False)
    image = np.zeros(shape)
    for row, col, flux in stars:
        rows, cols, s_rows, s_cols, off_row, off_col = stamp_slices(row, col, shape, HALF)
        image[rows, cols] += flux * psf.stamp(row, col, off_row, off_col, HALF)[s_rows, s_cols]
    return image


def _image(light, seed=0):
    """One r band of ``light`` + sky with Poisson noise, its saturated pixels NaN and marked."""
    counts = np.random.default_rng(seed).poisson(light + SKY).astype(np.float64)
    saturated = counts >= LEVEL
    counts[saturated] = np.nan
    return SurveyImage(
        None,
        ("r",),
        counts[None],
        np.full((1, *light.shape), SKY),
        np.array([FWHM_PX * 0.396]),
        np.array([22.5]),  # one nanomaggy per electron
        None,
        saturated=saturated[None],
    )


def _catalog(shape, plocs, fluxes):
    n = len(plocs)
    plocs = torch.tensor(plocs, dtype=torch.float32).reshape(1, n, 2)
    fluxes = torch.tensor(fluxes, dtype=torch.float32).reshape(1, n, 1)
    return FullCatalog(
        shape[0],
        shape[1],
        {
            "n_sources": torch.tensor([n]),
            "plocs": plocs,
            "fluxes": fluxes,
            "fluxes@0.05": fluxes * 0.8,
            "fluxes@0.95": fluxes * 1.2,
            "prob_source": torch.full((1, n, 1), 0.7),
            "prob_galaxy": torch.full((1, n, 1), 0.3),
        },
    )


TRUE = (40.3, 39.6, 2e6)  # r ~ 6.7 on this zero point: a core of ~3 px radius saturates
FAR = [(8.5, 9.5, 8e3), (72.5, 66.5, 8e3)]
PIECES = [(37.0, 39.5), (43.5, 39.7), (40.2, 36.5), (40.4, 42.8)]  # the network's ring


def _scene():
    shape = (81, 81)
    image = _image(_render(shape, [TRUE, *FAR]))
    plocs = [(r, c) for r, c, _ in FAR] + PIECES
    catalog = _catalog(shape, plocs, [f for _, _, f in FAR] + [5e4] * len(PIECES))
    return image, catalog


def test_blobs_are_8_connected_groups_over_every_band():
    saturated = np.zeros((2, 10, 10), dtype=bool)
    saturated[0, 1, 1] = saturated[1, 2, 2] = True  # diagonal neighbours in two bands: one blob
    saturated[0, 7, 7:9] = True
    blobs = saturated_blobs(saturated)
    assert sorted(sorted(map(tuple, b.tolist())) for b in blobs) == [
        [(1, 1), (2, 2)],
        [(7, 7), (7, 8)],
    ]


def test_a_saturated_star_is_found_where_it_is_and_measured_on_its_wings():
    image, catalog = _scene()
    assert np.isnan(image.images).sum() > 20  # the core is missing
    stars = recover_saturated_stars(image, catalog, [MoffatShape(FWHM_PX, 3.5, False)], 0)
    assert len(stars) == 1
    star = stars[0]
    # the PSF is exact and the wings hold ~10^5 electrons of S/N: a tenth of a pixel and a few
    # percent are generous; the interval must hold the truth
    assert np.linalg.norm(star.plocs - np.array(TRUE[:2])) < 0.15
    assert star.fluxes[0] == pytest.approx(TRUE[2], rel=0.05)
    assert abs(star.fluxes[0] - TRUE[2]) < 3 * star.fluxes_sigma[0]
    assert star.saturated_bands.tolist() == [True]
    assert 0.5 < star.lost[0] < 1.0
    # the ring of pieces is replaced by it; the far stars are nobody's pieces
    assert sorted(star.replaced.tolist()) == [2, 3, 4, 5]
    assert not set(star.dropped.tolist()) & {0, 1}


def test_the_catalog_gets_the_star_in_a_pieces_row_and_loses_the_other_pieces():
    image, catalog = _scene()
    stars = recover_saturated_stars(image, catalog, [MoffatShape(FWHM_PX, 3.5, False)], 0)
    out = with_saturated_stars(catalog, stars, (0.05, 0.95))
    n = int(out["n_sources"][0])
    assert n == 3  # two far stars and the star
    plocs = out["plocs"][0].numpy()
    row = int(np.argmin(np.linalg.norm(plocs - np.array(TRUE[:2]), axis=-1)))
    assert out["prob_galaxy"][0, row, 0] == 0 and out["prob_source"][0, row, 0] == 1
    low, flux, high = (out[k][0, row, 0] for k in ("fluxes@0.05", "fluxes", "fluxes@0.95"))
    assert low < flux < high
    for r, c, _ in FAR:  # untouched
        assert np.min(np.linalg.norm(plocs - np.array([r, c]), axis=-1)) < 1e-4


def test_a_star_without_pieces_is_a_new_row():
    image, catalog = _scene()
    far_only = _catalog((81, 81), [(r, c) for r, c, _ in FAR], [f for _, _, f in FAR])
    stars = recover_saturated_stars(image, far_only, [MoffatShape(FWHM_PX, 3.5, False)], 0)
    assert len(stars[0].replaced) == 0
    out = with_saturated_stars(far_only, stars, (0.05, 0.95))
    assert int(out["n_sources"][0]) == 3
    assert out["prob_source"][0, 2, 0] == 1 and out["prob_galaxy"][0, 2, 0] == 0
    assert out["fluxes"][0, 2, 0] == pytest.approx(stars[0].fluxes[0], rel=1e-5)


def test_a_joint_sample_loses_its_own_pieces_and_draws_the_star():
    image, catalog = _scene()
    stars = recover_saturated_stars(image, catalog, [MoffatShape(FWHM_PX, 3.5, False)], 0)
    # a sample with other pieces on the core and one far star
    sample = _catalog((81, 81), [(40.0, 40.0), (41.5, 38.5), FAR[0][:2]], [3e4, 3e4, 8e3])
    drawn = with_saturated_stars(sample, stars, rng=np.random.default_rng(0))
    assert int(drawn["n_sources"][0]) == 2
    flux = float(drawn["fluxes"][0, -1, 0])
    assert abs(flux - stars[0].fluxes[0]) < 5 * stars[0].fluxes_sigma[0]
    assert flux != pytest.approx(stars[0].fluxes[0], rel=1e-9)  # a draw, not the estimate


def test_a_saturated_pixel_with_no_star_around_it_stays_as_it_is():
    """A hot pixel or a bad column flagged saturated on empty sky is not a star."""
    shape = (81, 81)
    image = _image(np.zeros(shape), seed=3)
    image.saturated[0, 40, 40:42] = True
    image.images[0, 40, 40:42] = np.nan
    catalog = _catalog(shape, [(40.5, 40.2)], [50.0])  # a network guess on the pixel
    assert recover_saturated_stars(image, catalog, [MoffatShape(FWHM_PX, 3.5, False)], 0) == []


def test_an_image_that_does_not_say_what_saturated_has_no_saturated_stars():
    image, catalog = _scene()
    unknown = SurveyImage(
        None, ("r",), image.images, image.background, image.psf_fwhm_arcsec, image.magzero, None
    )
    assert recover_saturated_stars(unknown, catalog, [MoffatShape(FWHM_PX, 3.5, False)], 0) == []


def test_the_image_own_stars_correct_a_psf_model_whose_wings_are_wrong():
    """Stars drawn with broader wings (beta 2.5) than the model's (3.5), same FWHM."""
    shape = (200, 200)
    star = (100.4, 99.7, 3e6)
    grid = [(r + 0.3, c + 0.6) for r in range(20, 190, 40) for c in range(20, 190, 40)]
    calibrators = [(r, c, 4e5) for r, c in grid if np.hypot(r - 100, c - 100) > 40]
    light = _render(shape, [star, *calibrators], beta=2.5)
    image = _image(light, seed=1)
    assert np.isnan(image.images[0, 90:110, 90:110]).any()
    assert not np.isnan(image.images[0, 15:25, 15:25]).any()  # calibrators do not saturate
    model = [MoffatShape(FWHM_PX, 3.5, False)]
    alone = recover_saturated_stars(image, _catalog(shape, [], []), model, 0)
    plocs = [(r, c) for r, c, _ in calibrators]
    calibrated = recover_saturated_stars(
        image, _catalog(shape, plocs, [f for _, _, f in calibrators]), model, 0
    )
    error_alone = abs(alone[0].fluxes[0] / star[2] - 1)
    error_calibrated = abs(calibrated[0].fluxes[0] / star[2] - 1)
    # broader true wings make a wing fit with the narrower model ~30 % too bright; the
    # calibration stars see the same ratio and take most of it out
    assert error_alone > 0.05
    assert error_calibrated < error_alone / 2
    assert abs(calibrated[0].fluxes[0] - star[2]) < 3 * calibrated[0].fluxes_sigma[0]
