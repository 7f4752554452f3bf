"""PSF-fit star photometry on synthetic images with a known answer."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bliss.catalog import FullCatalog
from bliss.metrics.photometry import flux_cramer_rao_std
from bliss.predict import psf_model
from bliss.predict.psf_model import MoffatShape, fit_moffat_shape, moffat_stamp
from bliss.predict.psf_photometry import (
    APERTURE_FWHM,
    LOCAL_SKY_KEY,
    SURE_POINT_SNR,
    _aperture_correction,
    refine_star_fluxes,
)
from bliss.protocols import SurveyImage

SCALE = 0.4  # arcsec per pixel
SKY = 200.0
MAGZERO = 22.5  # one electron is one nanomaggy: fluxes read the same in both units
QUANTILES = (0.05, 0.5, 0.95)


def _scene(profile, n_side=6, spacing=40, seed=0, flux_range=(2e4, 2e5), border=0):
    """Stars on a grid (isolated at the default spacing), Poisson noise; one band."""
    rng = np.random.default_rng(seed)
    size = n_side * spacing + 2 * border
    truth_rows = border + (np.arange(n_side) + 0.5) * spacing + rng.uniform(-0.5, 0.5, n_side)
    rows, cols = np.meshgrid(truth_rows, truth_rows, indexing="ij")
    rows = rows.ravel() + rng.uniform(-0.5, 0.5, rows.size)
    cols = cols.ravel() + rng.uniform(-0.5, 0.5, cols.size)
    fluxes = np.exp(rng.uniform(*np.log(flux_range), rows.size))
    clean = np.full((size, size), SKY)
    half = 15
    for row, col, flux in zip(rows, cols, fluxes, strict=True):
        r0, c0 = int(math.floor(row)), int(math.floor(col))
        stamp = profile(row - (r0 + 0.5), col - (c0 + 0.5), half)
        clean[r0 - half : r0 + half + 1, c0 - half : c0 + half + 1] += flux * stamp
    image = rng.poisson(clean).astype(np.float32)
    return image, np.stack([rows, cols], -1), fluxes


def _surveyimage(image, fwhm_arcsec):
    return SurveyImage(
        path=None,
        bands=("r",),
        images=image[None],
        background=np.full((1, *image.shape), SKY, np.float32),
        psf_fwhm_arcsec=np.array([fwhm_arcsec], np.float32),
        magzero=np.array([MAGZERO]),
        wcs=None,
    )


def _network_catalog(image, positions, fluxes, rng, prob_galaxy=None):
    """A stand-in for the network: positions off by 0.1 px, fluxes off by 5 %, wide intervals."""
    n = len(positions)
    shifted = positions + rng.normal(0, 0.1, positions.shape)
    estimate = fluxes * rng.normal(1, 0.05, n)
    data = {
        "n_sources": torch.tensor([n]),
        "plocs": torch.tensor(shifted, dtype=torch.float32)[None],
        "prob_galaxy": torch.tensor(
            np.zeros(n) if prob_galaxy is None else prob_galaxy, dtype=torch.float32
        ).view(1, n, 1),
        "fluxes": torch.tensor(estimate, dtype=torch.float32).view(1, n, 1),
    }
    for q in QUANTILES:
        data[f"fluxes@{q:g}"] = torch.tensor(
            estimate * (1 + 0.1 * float(torch.special.ndtri(torch.tensor(q)))), dtype=torch.float32
        ).view(1, n, 1)
    return FullCatalog(*image.shape, data)


def test_moffat_stamp_holds_the_analytic_enclosed_light():
    fwhm, beta, half = 3.0, 3.5, 10
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    stamp = moffat_stamp(fwhm, beta, 0.0, 0.0, half)
    # the square stamp holds more than the inscribed circle and less than the circumscribed one
    inside = [1 - (1 + (r / alpha) ** 2) ** (1 - beta) for r in (half + 0.5, (half + 0.5) * 2**0.5)]
    assert inside[0] < stamp.sum() < inside[1]
    assert np.unravel_index(stamp.argmax(), stamp.shape) == (half, half)


def test_fluxes_reach_the_cramer_rao_bound_and_intervals_cover():
    fwhm_px, beta = 3.2, 3.5
    image, positions, fluxes = _scene(lambda dr, dc, h: moffat_stamp(fwhm_px, beta, dr, dc, h))
    rng = np.random.default_rng(1)
    catalog = _network_catalog(image, positions, fluxes, rng)
    refined, shapes = refine_star_fluxes(
        _surveyimage(image, fwhm_px * SCALE), catalog, QUANTILES, SCALE, beta
    )
    estimate = refined["fluxes"][0, :, 0].double().numpy()
    bound = np.array(
        [flux_cramer_rao_std(moffat_stamp(fwhm_px, beta, 0, 0, 15), SKY, f) for f in fluxes]
    )
    z = (estimate - fluxes) / bound
    # 36 stars: the rms of z is within 30 % of 1 at the bound (chi2 with 36 dof: 5-95 % is
    # 0.8-1.2 in rms), and not far above it (the fit reaches the bound)
    assert 0.6 < np.sqrt(np.mean(z**2)) < 1.3
    low, high = refined["fluxes@0.05"][0, :, 0].numpy(), refined["fluxes@0.95"][0, :, 0].numpy()
    covered = np.mean((fluxes >= low) & (fluxes <= high))
    assert covered >= 0.8  # binomial(36, 0.9): P(< 29 covered) < 1 %
    assert shapes[0].fitted is False  # the nominal PSF was right: kept


def test_a_gaussian_psf_is_fitted_from_the_stars_and_fluxes_stay_unbiased():
    fwhm_px = 3.2
    sigma = fwhm_px / 2.3548

    def gaussian(dr, dc, half):
        grid = np.arange(-half, half + 1)
        sub = (np.arange(5) + 0.5) / 5 - 0.5
        r = (grid[:, None] + sub[None] - dr).ravel()
        c = (grid[:, None] + sub[None] - dc).ravel()
        g = np.exp(-(r[:, None] ** 2 + c[None] ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
        return g.reshape(2 * half + 1, 5, 2 * half + 1, 5).mean(axis=(1, 3))

    image, positions, fluxes = _scene(gaussian, seed=2)
    catalog = _network_catalog(image, positions, fluxes, np.random.default_rng(3))
    refined, shapes = refine_star_fluxes(
        _surveyimage(image, fwhm_px * SCALE), catalog, QUANTILES, SCALE, 3.5
    )
    assert shapes[0].fitted and shapes[0].beta > 10  # a Moffat that is nearly a Gaussian
    ratio = refined["fluxes"][0, :, 0].double().numpy() / fluxes
    assert abs(np.median(ratio) - 1) < 0.01


def test_galaxies_and_faint_confident_network_fluxes_are_kept():
    fwhm_px = 3.2
    image, positions, fluxes = _scene(
        lambda dr, dc, h: moffat_stamp(fwhm_px, 3.5, dr, dc, h), n_side=3, seed=4
    )
    prob_galaxy = np.array([0.9, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    catalog = _network_catalog(image, positions, fluxes, np.random.default_rng(5), prob_galaxy)
    refined, _ = refine_star_fluxes(
        _surveyimage(image, fwhm_px * SCALE), catalog, QUANTILES, SCALE, 3.5
    )
    before, after = catalog["fluxes"][0, :, 0], refined["fluxes"][0, :, 0]
    assert torch.equal(after[:2], before[:2])  # P(galaxy) >= 0.2: the network's
    assert not torch.equal(after[2:], before[2:])
    # the isolated stars' fits had their own local sky; the network's fluxes did not
    local_sky = refined[LOCAL_SKY_KEY][0, :, 0].bool()
    assert not local_sky[:2].any() and local_sky[2:].all()
    assert torch.equal(refined["plocs"], catalog["plocs"])


def test_shape_fit_falls_back_without_enough_stars():
    shape = fit_moffat_shape(
        np.zeros((50, 50)), np.ones((50, 50)), np.array([[25.0, 25.0]]), 3.0, 3.5
    )
    assert shape == MoffatShape(3.0, 3.5, fitted=False)


def test_shape_search_off_the_moffat_family_falls_back(monkeypatch):
    # a Nelder-Mead search on a flat chi-square once wandered to log(beta - 1) ~ -40, where
    # 1 + exp(x) is exactly 1 and no Moffat exists (a faint_red gate field raised there)
    fwhm_px = 3.2
    image, positions, _ = _scene(lambda dr, dc, h: moffat_stamp(fwhm_px, 3.5, dr, dc, h), seed=6)
    data = image - SKY
    variance = np.full_like(data, SKY)
    seen = []

    def wandering(objective, start, **_):
        for point in ([start[0], -60.0], [-800.0, start[1]], [800.0, 800.0]):
            seen.append(objective(np.array(point)))
        return SimpleNamespace(x=np.array([start[0], -60.0]), fun=seen[0])

    monkeypatch.setattr(psf_model.optimize, "minimize", wandering)
    shape = fit_moffat_shape(data, variance, positions, fwhm_px, 3.5)
    assert all(np.isfinite(seen))
    assert shape == MoffatShape(fwhm_px, 3.5, fitted=False)  # beta 1.05: rejected


def test_empty_catalog_is_returned_as_is():
    image = np.full((32, 32), SKY, np.float32)
    empty = FullCatalog(
        32,
        32,
        {
            "n_sources": torch.tensor([0]),
            "plocs": torch.zeros(1, 0, 2),
            "prob_galaxy": torch.zeros(1, 0, 1),
            "fluxes": torch.zeros(1, 0, 1),
        },
    )
    refined, shapes = refine_star_fluxes(_surveyimage(image, 1.3), empty, QUANTILES, SCALE)
    # no star to fit: each band's header Moffat, so that galaxy fits still have a PSF
    assert refined is empty and len(shapes) == 1
    assert isinstance(shapes[0], MoffatShape) and not shapes[0].fitted


def test_a_field_of_galaxies_only_keeps_every_flux():
    image, positions, fluxes = _scene(
        lambda dr, dc, h: moffat_stamp(3.2, 3.5, dr, dc, h), n_side=2, seed=6
    )
    catalog = _network_catalog(
        image, positions, fluxes, np.random.default_rng(7), prob_galaxy=np.full(4, 0.9)
    )
    refined, _ = refine_star_fluxes(_surveyimage(image, 1.28), catalog, QUANTILES, SCALE)
    assert torch.equal(refined["fluxes"], catalog["fluxes"])


def _gaussian_mixture(dr, dc, half, components):
    """Round Gaussians ``(weight, sigma px)`` centred at ``(dr, dc)``, pixel-integrated."""
    grid = np.arange(-half, half + 1)
    sub = (np.arange(5) + 0.5) / 5 - 0.5
    r = (grid[:, None] + sub[None] - dr).ravel()
    c = (grid[:, None] + sub[None] - dc).ravel()
    d2 = r[:, None] ** 2 + c[None] ** 2
    profile = sum(w * np.exp(-d2 / (2 * s**2)) / (2 * np.pi * s**2) for w, s in components)
    return profile.reshape(2 * half + 1, 5, 2 * half + 1, 5).mean(axis=(1, 3))


def _double_gaussian(dr, dc, half):
    """A PSF no Moffat describes: a core and a wide wing (20 % of the light), pixel-integrated."""
    return _gaussian_mixture(dr, dc, half, ((0.8, 1.2), (0.2, 3.5)))


def test_the_image_psf_model_draws_stamps_at_any_offset():
    """A spline through the model's centred image reproduces the profile drawn off-centre.

    Interpolating pixel values is not integrating the shifted profile over pixels: for this
    core (sigma 1.2 px) the two differ by up to 0.7 % of the peak at a 0.45 px offset, and by
    < 1e-12 at no offset.
    """
    from bliss.predict.psf_model import ImagePsf

    psf = ImagePsf(lambda row, col: _double_gaussian(0.0, 0.0, 12))
    for offset in ((0.0, 0.0), (0.3, -0.45), (-0.2, 0.1)):
        drawn = _double_gaussian(*offset, 7)
        stamp = psf.stamp(40.0, 40.0, *offset, 7)
        tolerance = 1e-10 if offset == (0.0, 0.0) else 1e-2
        assert np.abs(stamp - drawn).max() < tolerance * drawn.max(), offset


def test_the_image_psf_puts_its_centroid_on_the_star():
    """A PSF model image off its middle pixel (as SDSS psField ones are, by up to 0.07 px) is
    drawn with its centroid at the star's position, so fitted positions are centroids."""
    from bliss.predict.psf_model import ImagePsf

    shift = (0.2, -0.15)
    psf = ImagePsf(lambda row, col: _double_gaussian(*shift, 12))
    for offset in ((0.0, 0.0), (0.3, -0.45)):
        stamp = psf.stamp(40.0, 40.0, *offset, 7)
        drawn = _double_gaussian(*offset, 7)  # the same profile, centred on the star
        assert np.abs(stamp - drawn).max() < 1e-2 * drawn.max(), offset
    # without the recentring the stamp would be off by the shift: 12 % of the peak
    assert np.abs(_double_gaussian(*shift, 7) - _double_gaussian(0.0, 0.0, 7)).max() > 0.1 * (
        _double_gaussian(0.0, 0.0, 7).max()
    )


def test_the_image_psf_gives_unbiased_fluxes_on_its_aperture_scale():
    """With ``SurveyImage.psf`` the fit uses that model (no Moffat fitted, none would match
    this PSF to 1 %) and puts its fluxes on the scale of a 7.43" aperture, measured on the
    image's own stars: here that aperture holds all of the light, so the fluxes are the true
    ones whatever aperture correction the image's network fluxes carry (1.04)."""
    import dataclasses

    from bliss.predict.psf_model import ImagePsf

    image, positions, fluxes = _scene(_double_gaussian, seed=6)
    correction = 1.04
    prob_galaxy = np.zeros(len(fluxes))
    prob_galaxy[np.argmax(fluxes)] = 0.3  # unsure, but a point source at S/N >= SURE_POINT_SNR
    catalog = _network_catalog(
        image, positions, fluxes * correction, np.random.default_rng(7), prob_galaxy
    )
    surveyimage = dataclasses.replace(
        _surveyimage(image, 1.2 * 2.3548 * SCALE),
        psf=lambda band, row, col: _double_gaussian(0.0, 0.0, 12),
        aperture_correction=np.array([correction]),
    )
    refined, models = refine_star_fluxes(surveyimage, catalog, QUANTILES, SCALE, 3.5)
    assert isinstance(models[0], ImagePsf)
    ratio = refined["fluxes"][0, :, 0].double().numpy() / fluxes
    # 36 stars at S/N 100-1000: the median ratio is within 0.5 % of 1 (the network stand-in is
    # off by 5 % per star, so a kept network flux would show)
    assert abs(np.median(ratio) - 1) < 0.005
    assert np.std(ratio) < 0.02
    brightest = np.argmax(fluxes)
    low, high = (refined[f"fluxes@{q}"][0, brightest, 0] for q in ("0.05", "0.95"))
    assert refined["fluxes"][0, brightest, 0] != catalog["fluxes"][0, brightest, 0]  # the fit's
    assert abs(ratio[brightest] - 1) < 0.01
    assert refined["fluxes"][0, brightest, 0] / ((high - low) / 3.29) >= SURE_POINT_SNR


def test_a_crowded_field_measures_no_aperture_correction():
    fwhm_px, beta = 3.2, 3.5
    profile = lambda dr, dc, h: moffat_stamp(fwhm_px, beta, dr, dc, h)  # noqa: E731
    radius = APERTURE_FWHM * fwhm_px  # 12.8 px
    # 9 isolated stars (120 x 120 px), fluxes given on half the aperture's scale: x2 is measured
    sparse, positions, fluxes = _scene(profile, n_side=3, spacing=40)
    sigma = np.full(len(fluxes), 1.0)
    factor, _ = _aperture_correction(
        sparse - SKY, positions, fluxes / 2, sigma, positions, radius, model_rejected=True
    )
    assert factor == pytest.approx(2.0, rel=0.05)
    # beside them, 64 stars 12 px apart: most apertures hold neighbours, so the field is
    # crowded and even the 9 isolated stars' apertures are not trusted
    crowded, crowded_positions, crowded_fluxes = _scene(
        profile, n_side=8, spacing=12, seed=1, border=12
    )
    image = np.concatenate([sparse, crowded], axis=1) - SKY
    both = np.concatenate([positions, crowded_positions + [0.0, sparse.shape[1]]])
    halved = np.concatenate([fluxes, crowded_fluxes]) / 2
    assert (
        _aperture_correction(
            image, both, halved, np.full(len(both), 1.0), both, radius, model_rejected=True
        )
        is None
    )


def _with_position_intervals(catalog, sigma_px):
    """The stand-in network's location posterior: Gaussian, ``sigma_px`` wide."""
    data = dict(catalog.items())
    for q in QUANTILES:
        data[f"plocs@{q:g}"] = catalog["plocs"] + sigma_px * float(
            torch.special.ndtri(torch.tensor(q))
        )
    return FullCatalog(catalog.height_px, catalog.width_px, data)


def test_bright_star_positions_are_fitted_and_their_intervals_cover():
    fwhm_px, beta = 3.2, 3.5
    image, positions, fluxes = _scene(lambda dr, dc, h: moffat_stamp(fwhm_px, beta, dr, dc, h))
    network = _with_position_intervals(
        _network_catalog(image, positions, fluxes, np.random.default_rng(2)), 0.1
    )
    refined, _ = refine_star_fluxes(
        _surveyimage(image, fwhm_px * SCALE), network, QUANTILES, SCALE, beta
    )
    estimate = refined["plocs"][0].double().numpy()
    low, high = refined["plocs@0.05"][0].numpy(), refined["plocs@0.95"][0].numpy()
    sigma = (high - low) / (2 * 1.6449)
    # S/N 100-700 stars: the fit's errors are a few hundredths of a pixel, the network's 0.1
    assert np.median(sigma) < 0.03
    assert np.sqrt(np.mean((estimate - positions) ** 2)) < 0.05
    # 72 coordinates: the rms of z is 1 within ~0.2 (chi2 with 72 dof: 5-95 % is 0.85-1.15)
    z = (estimate - positions) / sigma
    assert 0.7 < np.sqrt(np.mean(z**2)) < 1.3
    assert np.mean((positions >= low) & (positions <= high)) >= 0.8


def test_faint_star_positions_keep_the_network_posterior():
    fwhm_px, beta = 3.2, 3.5
    image, positions, fluxes = _scene(
        lambda dr, dc, h: moffat_stamp(fwhm_px, beta, dr, dc, h), flux_range=(300, 600)
    )
    network = _with_position_intervals(
        _network_catalog(image, positions, fluxes, np.random.default_rng(2)), 0.1
    )
    refined, _ = refine_star_fluxes(
        _surveyimage(image, fwhm_px * SCALE), network, QUANTILES, SCALE, beta
    )
    # S/N ~4-8, below POSITION_SNR: nothing moves
    for key in ("plocs", "plocs@0.05", "plocs@0.95"):
        torch.testing.assert_close(refined[key], network[key])


def _wide_gaussian(dr, dc, half):
    """An extended source: a round Gaussian of sigma 2.5 px convolved with the double Gaussian
    PSF (its core's sigma grows from 1.2 to 2.8 px), pixel-integrated."""
    return _gaussian_mixture(
        dr, dc, half, ((0.8, math.hypot(1.2, 2.5)), (0.2, math.hypot(3.5, 2.5)))
    )


@pytest.mark.parametrize(("profile", "star"), [(_double_gaussian, True), (_wide_gaussian, False)])
def test_a_bright_point_source_called_a_galaxy_becomes_a_star(profile, star):
    """With the image's own PSF model, a source the network calls a galaxy (P 0.7) that the PSF
    explains at S/N >= SURE_POINT_SNR becomes a star with the PSF fit's flux; an extended one
    (the same flux, 2.5 px Gaussian under the PSF) stays a galaxy with the network's flux.
    Faint ones (S/N < 100) keep their type whatever they are."""
    import dataclasses

    image, positions, fluxes = _scene(profile, n_side=4, seed=8, flux_range=(2e3, 3e5))
    prob_galaxy = np.full(len(fluxes), 0.7)
    catalog = _network_catalog(image, positions, fluxes, np.random.default_rng(9), prob_galaxy)
    surveyimage = dataclasses.replace(
        _surveyimage(image, 1.2 * 2.3548 * SCALE),
        psf=lambda band, row, col: _double_gaussian(0.0, 0.0, 12),
    )
    refined, _ = refine_star_fluxes(surveyimage, catalog, QUANTILES, SCALE, 3.5)
    now_star = refined["prob_galaxy"][0, :, 0].numpy() < 0.5
    # Poisson S/N of a source of F electrons on SKY per pixel, over ~60 pixels of the core
    snr = fluxes / np.sqrt(fluxes + 60 * SKY)
    bright = snr >= 1.5 * SURE_POINT_SNR
    faint = snr < SURE_POINT_SNR
    assert bright.sum() >= 3 and faint.sum() >= 2  # the draw spans both sides (seed 8)
    assert not now_star[faint].any()
    ratio = refined["fluxes"][0, :, 0].double().numpy() / fluxes
    if star:
        assert now_star[bright].all()
        assert np.abs(ratio[bright] - 1).max() < 0.01  # the fit's flux, not the network's 5 %
    else:
        assert not now_star.any()
        # the network's stand-in flux is kept (a PSF fit of an extended source is low)
        assert np.allclose(refined["fluxes"][0, :, 0].numpy(), catalog["fluxes"][0, :, 0].numpy())
