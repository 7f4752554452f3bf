"""PSF-fit photometry of a crowded field: a tangle of stars fitted in blocks."""

import math

import numpy as np
import torch

from bliss.catalog import FullCatalog
from bliss.predict.psf_model import ImagePsf, moffat_stamp
from bliss.predict.psf_photometry import LOCAL_SKY_KEY, MAX_GROUP, _fit_sets, refine_star_fluxes
from bliss.protocols import SurveyImage

SKY = 100.0
FWHM_PX, BETA = 3.0, 3.5
QUANTILES = (0.05, 0.95)
PSF_IMAGE = moffat_stamp(FWHM_PX, BETA, 0.0, 0.0, 20)
PSF_IMAGE /= PSF_IMAGE.sum()


def _crowded_scene(seed=0, size=80, n=320):
    """``n`` stars at random on ``size`` px (0.05 per px², most within 3 px of another)."""
    rng = np.random.default_rng(seed)
    positions = rng.uniform(4, size - 4, (n, 2))
    fluxes = np.exp(rng.uniform(math.log(800), math.log(3e4), n))
    clean = np.full((size, size), SKY)
    psf = ImagePsf(lambda row, col: PSF_IMAGE)
    half = 15
    for (row, col), flux in zip(positions, fluxes, strict=True):
        r0, c0 = int(math.floor(row)), int(math.floor(col))
        stamp = psf.stamp(row, col, row - (r0 + 0.5), col - (c0 + 0.5), half)
        top, left = r0 - half, c0 - half
        cut = np.s_[max(top, 0) : top + 2 * half + 1, max(left, 0) : left + 2 * half + 1]
        clean[cut] += (
            flux
            * stamp[max(-top, 0) :, max(-left, 0) :][: clean[cut].shape[0], : clean[cut].shape[1]]
        )
    image = rng.poisson(clean).astype(np.float64)
    survey_image = SurveyImage(
        path=None,
        bands=("r",),
        images=image[None],
        background=np.full((1, size, size), SKY),
        psf_fwhm_arcsec=np.array([FWHM_PX * 0.4]),
        magzero=np.array([22.5]),  # one electron is one nanomaggy
        wcs=None,
        psf=lambda band, row, col: PSF_IMAGE,
    )
    return survey_image, positions, fluxes


def _stars_only_catalog(size, positions, fluxes):
    """A crowded-field network's catalog: no galaxy factor, fluxes 30 % low, intervals of 5 %."""
    n = len(positions)
    estimate = torch.tensor(0.7 * fluxes, dtype=torch.float32).view(1, n, 1)
    data = {
        "n_sources": torch.tensor([n]),
        "plocs": torch.tensor(positions, dtype=torch.float32)[None],
        "fluxes": estimate,
        "fluxes@0.05": estimate * 0.92,
        "fluxes@0.95": estimate * 1.08,
    }
    return FullCatalog(size, size, data)


def test_a_tangle_is_cut_into_blocks_that_keep_each_star_once():
    rng = np.random.default_rng(1)
    positions = rng.uniform(0, 100, (400, 2))
    sets = _fit_sets(positions, radius=15.0)
    kept = np.concatenate([k for _, k, _ in sets])
    assert np.array_equal(np.sort(kept), np.arange(400))
    for members, kept_here, block in sets:
        assert block
        assert np.isin(kept_here, members).all()
        assert len(members) > len(kept_here)  # the margin's stars are fitted too
    # a small isolated group stays one fit, all of it kept
    few = np.array([[10.0, 10.0], [12.0, 11.0], [200.0, 200.0]])
    assert [(list(m), list(k), b) for m, k, b in _fit_sets(few, 15.0)] == [
        ([0, 1], [0, 1], False),
        ([2], [2], False),
    ]
    assert MAX_GROUP < 400


def test_a_crowded_field_gets_unbiased_fluxes_and_covering_intervals():
    image, positions, fluxes = _crowded_scene()
    catalog = _stars_only_catalog(80, positions, fluxes)
    refined, _ = refine_star_fluxes(image, catalog, QUANTILES, 0.4)
    estimate = refined["fluxes"][0, :, 0].double().numpy()
    low = refined["fluxes@0.05"][0, :, 0].double().numpy()
    high = refined["fluxes@0.95"][0, :, 0].double().numpy()
    ratio = estimate / fluxes
    # the network's fluxes were 30 % low; with the true positions the fit is unbiased: for
    # 320 stars, the median ratio's standard error is ~1 %
    assert abs(np.median(ratio) - 1) < 0.03
    bright = fluxes > 5e3  # S/N > 40 even when blended
    assert np.median(np.abs(ratio[bright] - 1)) < 0.03
    covered = (fluxes >= low) & (fluxes <= high)
    # 90 % intervals over 320 stars: binomial sd 1.7 %; the prior (the network's interval
    # widened) barely narrows them
    assert 0.84 <= covered.mean() <= 0.97


def test_coincident_detections_share_the_light_without_diverging():
    image, positions, fluxes = _crowded_scene(seed=2)
    # the network reports the brightest star twice, 0.05 px apart
    brightest = int(np.argmax(fluxes))
    doubled = np.concatenate([positions, positions[[brightest]] + 0.05])
    claimed = np.concatenate([fluxes, [fluxes[brightest] * 0.5]])
    claimed[brightest] *= 0.5
    catalog = _stars_only_catalog(80, doubled, claimed / 0.7)
    refined, _ = refine_star_fluxes(image, catalog, QUANTILES, 0.4)
    estimate = refined["fluxes"][0, :, 0].double().numpy()
    width = (refined["fluxes@0.95"] - refined["fluxes@0.05"])[0, :, 0].double().numpy()
    assert np.all(np.isfinite(estimate)) and np.all(np.isfinite(width))
    # the pair's sum is measured as well as the star alone would be
    single, _ = refine_star_fluxes(
        image, _stars_only_catalog(80, positions, fluxes), QUANTILES, 0.4
    )
    sigma = float(single["fluxes@0.95"][0, brightest, 0] - single["fluxes@0.05"][0, brightest, 0])
    sigma /= 2 * 1.645
    assert abs(estimate[brightest] + estimate[-1] - fluxes[brightest]) < 3 * sigma


def test_stars_fitted_in_blocks_keep_the_network_positions():
    """A block's fitted positions are pulled by the stars no catalog holds: not reported."""
    image, positions, fluxes = _crowded_scene()
    catalog = _stars_only_catalog(80, positions, fluxes)
    data = dict(catalog.items())
    for q, z in zip(QUANTILES, (-1.6449, 1.6449), strict=True):
        data[f"plocs@{q:g}"] = catalog["plocs"] + 0.3 * z  # wide: a fit would be narrower
    catalog = FullCatalog(80, 80, data)
    refined, _ = refine_star_fluxes(image, catalog, QUANTILES, 0.4)
    for key in ("plocs", "plocs@0.05", "plocs@0.95"):
        torch.testing.assert_close(refined[key], catalog[key])
    assert not torch.equal(refined["fluxes"], catalog["fluxes"])  # the fluxes were fitted
    # ... against the image's background: a block has no local sky term
    assert not refined[LOCAL_SKY_KEY][0, :80].bool().any()
