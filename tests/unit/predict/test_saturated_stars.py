"""Saturated stars on synthetic scenes: two bands, a bleed trail, a zero point other than 22.5.

Complements ``test_saturated_core_fit.py`` (one band, one electron per nanomaggy): here the
reference band is not the first, only it saturates, its blob carries a bleed trail, fluxes are in
nanomaggies of a 24.0 zero point, and the catalog edit is checked key by key.
"""

import functools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bliss.catalog import FullCatalog
from bliss.predict.predictor import Predictor, StarPhotometry
from bliss.predict.psf_model import MoffatShape, stamp_slices
from bliss.predict.psf_photometry import LOCAL_SKY_KEY
from bliss.predict.saturated_stars import (
    CLAIM_PX,
    MATCH_PX,
    recover_saturated_stars,
    saturated_blobs,
    with_saturated_stars,
)
from bliss.predict.wing_fit import MIN_CALIBRATION_STARS, WingCorrection, wing_correction
from bliss.protocols import SurveyImage

SKY = 100.0  # electrons per pixel
FWHM_PX = 3.0
BETA = 3.5
LEVEL = 40_000.0  # counts (sky included) at which the detector saturates
RENDER_HALF = 25  # stamps drawn to 25 px: the fit region (at most 25 px) sees all the light
MAGZERO = 24.0
NMGY = 10 ** (-0.4 * (MAGZERO - 22.5))  # nanomaggies per electron (no PSF model of its own)
BANDS = ("g", "r")
REF = 1  # r: the reference band, and the only one that saturates
SHAPE = (80, 80)
QUANTILES = (0.05, 0.95)

TRUE = (40.3, 41.7)
TRUE_E = np.array([3e5, 1e7])  # g peaks at ~2e4 e (unsaturated); r saturates ~45 px
TRAIL = [(row, 41) for row in range(44, 56)]  # a one-pixel bleed trail below the core, in r
FAR = [(10.5, 12.2), (68.2, 70.9), (12.3, 70.4)]  # faint stars outside the star's fit region
FAR_E = np.array([[1e4, 2e4], [1e4, 2e4], [8e3, 1.5e4]])
# the network's ring of pieces around the hole, one on the trail (checked within CLAIM_PX below)
PIECES = [(36.4, 41.6), (44.2, 42.0), (40.1, 37.6), (40.6, 45.8), (50.5, 42.9)]
PIECE_E = np.array([[1e4, 3e4], [1e4, 5e4], [1e4, 2e4], [1e4, 4e4], [5e3, 1e4]])
DECOY = (35.3, 36.7)  # a fake detection 7 px from the centre: on the wings, not on the hole
DECOY_E = np.array([1e4, 3e4])


def _render(shape, stars, fwhm=FWHM_PX, beta=BETA):
    """Moffat stars ``[(row, col, electrons), ...]`` drawn as the PSF model draws them."""
    psf = MoffatShape(fwhm, beta, fitted=False)
    light = np.zeros(shape)
    for row, col, flux in stars:
        rows, cols, s_rows, s_cols, off_row, off_col = stamp_slices(row, col, shape, RENDER_HALF)
        stamp = psf.stamp(row, col, off_row, off_col, RENDER_HALF)
        light[rows, cols] += flux * stamp[s_rows, s_cols]
    return light


def _survey_image(light, seed, trail=()):
    """Bands of ``light`` (``c h w``) + sky, Poisson noise, saturated pixels NaN and marked."""
    counts = np.random.default_rng(seed).poisson(light + SKY).astype(np.float64)
    saturated = counts >= LEVEL
    for row, col in trail:  # charge bled along the column in the reference band
        saturated[REF, row, col] = True
    counts[saturated] = np.nan
    bands = len(light)
    return SurveyImage(
        None,
        BANDS[:bands],
        counts,
        np.full(counts.shape, SKY),
        np.full(bands, FWHM_PX * 0.396),
        np.full(bands, MAGZERO),
        None,
        saturated=saturated,
    )


def _catalog(plocs, fluxes_e, extra=None, shape=SHAPE):
    """A network catalog: ``fluxes_e`` (``n c``, electrons) in nanomaggies, quantiles +-20 %."""
    n = len(plocs)
    fluxes_e = np.asarray(fluxes_e, dtype=np.float64)
    fluxes = torch.tensor(fluxes_e * NMGY, dtype=torch.float32).reshape(1, n, fluxes_e.shape[-1])
    plocs = torch.tensor(np.asarray(plocs, dtype=np.float64), dtype=torch.float32).reshape(1, n, 2)
    data = {
        "n_sources": torch.tensor([n]),
        "plocs": plocs,
        "plocs@0.05": plocs - 0.3,
        "plocs@0.95": plocs + 0.3,
        "fluxes": fluxes,
        "fluxes@0.05": fluxes * 0.8,
        "fluxes@0.95": fluxes * 1.2,
        "prob_source": torch.full((1, n, 1), 0.7),
        "prob_galaxy": torch.full((1, n, 1), 0.3),
        **(extra or {}),
    }
    return FullCatalog(*shape, data)


def _scene(seed=0):
    light = np.stack([_render(SHAPE, [(*TRUE, TRUE_E[b])]) for b in range(2)])
    far = [[(*p, f[b]) for p, f in zip(FAR, FAR_E, strict=True)] for b in range(2)]
    light += np.stack([_render(SHAPE, stars) for stars in far])
    return _survey_image(light, seed, TRAIL)


N_FAR, N_PIECES = len(FAR), len(PIECES)
PIECE_ROWS = list(range(N_FAR, N_FAR + N_PIECES))
DECOY_ROW = N_FAR + N_PIECES


def _full_catalog(extra=None):
    """Far stars (rows 0-2), pieces (3-7), the decoy (8)."""
    plocs = [*FAR, *PIECES, DECOY]
    return _catalog(plocs, np.concatenate([FAR_E, PIECE_E, DECOY_E[None]]), extra)


def _models(bands=2):
    return [MoffatShape(FWHM_PX, BETA, fitted=False)] * bands


def _distance_to_mask(points, mask):
    pixels = np.argwhere(mask) + 0.5
    return np.array([np.min(np.linalg.norm(pixels - np.asarray(p), axis=-1)) for p in points])


@pytest.fixture(scope="module")
def scene():
    image = _scene()
    catalog = _full_catalog()
    stars = recover_saturated_stars(image, catalog, _models(), REF)
    return image, catalog, stars


# --------------------------------------------------------------------------- blobs


def test_blobs_are_8_connected_over_the_union_of_bands_with_absolute_indices():
    saturated = np.zeros((3, 12, 15), dtype=bool)
    saturated[0, 5:7, 8:10] = True  # a 2x2 core in band 0 ...
    saturated[2, 7:11, 9] = True  # ... its bleed trail in band 2 (edge-adjacent)
    saturated[1, 4, 10] = True  # ... and a pixel touching it by a corner only, in band 1
    saturated[1, 0, 0] = saturated[2, 1, 1] = True  # a diagonal pair in two bands
    saturated[0, 11, 14] = True  # a lone pixel in the far corner
    saturated[0, 0, 3] = saturated[1, 0, 5] = True  # one pixel apart: two blobs
    blobs = saturated_blobs(saturated)
    found = sorted(sorted(map(tuple, b.tolist())) for b in blobs)
    core = [(5, 8), (5, 9), (6, 8), (6, 9)] + [(r, 9) for r in range(7, 11)] + [(4, 10)]
    assert found == sorted([sorted(core), [(0, 0), (1, 1)], [(11, 14)], [(0, 3)], [(0, 5)]])
    assert all(b.shape[1] == 2 and b.dtype.kind == "i" for b in blobs)
    assert saturated_blobs(np.zeros((2, 5, 5), dtype=bool)) == []


# --------------------------------------------------------------------------- the fit


def test_the_scene_is_what_the_tests_assume(scene):
    image, _, _ = scene
    assert not image.saturated[0].any()  # g does not saturate
    assert image.saturated[REF].sum() > 40  # r: core and trail
    assert len(saturated_blobs(image.saturated)) == 1  # the trail is joined to the core
    assert np.all(_distance_to_mask(PIECES, image.saturated[REF]) <= CLAIM_PX - 0.2)
    assert _distance_to_mask([DECOY], image.saturated[REF])[0] > CLAIM_PX + 0.5
    assert np.all(_distance_to_mask(FAR, image.saturated[REF]) > 25)


def test_one_star_where_it_is_measured_in_both_bands(scene):
    image, _, stars = scene
    assert len(stars) == 1
    star = stars[0]
    # the position grid's last step is 0.125 px (at most 0.0625 px off per axis); photon noise
    # on ~1e6 e of wings adds ~0.02 px: 0.1 px per axis could only fail on a real error
    assert np.all(np.abs(star.plocs - TRUE) < 0.1)
    assert np.all(star.plocs_sigma >= 0.08)  # the position floor is in
    truth = TRUE_E * NMGY
    # r, ~95 % of the PSF's light on unusable pixels: a position 0.07 px off (the grid) moves
    # the wing flux by ~1.5 %, photon noise by 0.3 %; the reported error (>= 2 % sqrt(odds))
    # must cover it
    assert star.fluxes[REF] == pytest.approx(truth[REF], rel=0.03)
    assert abs(star.fluxes[REF] - truth[REF]) < 3 * star.fluxes_sigma[REF]
    # g is not saturated: a whole-PSF fit (S/N ~ 500) at r's position, 1 %
    assert star.fluxes[0] == pytest.approx(truth[0], rel=0.01)
    assert abs(star.fluxes[0] - truth[0]) < 3 * star.fluxes_sigma[0]
    assert star.fluxes_sigma[REF] / star.fluxes[REF] > star.fluxes_sigma[0] / star.fluxes[0]
    assert star.saturated_bands.tolist() == [False, True]
    assert star.lost[0] < 1e-6 and star.lost[REF] > 0.8
    np.testing.assert_array_equal(
        sorted(map(tuple, star.blob.tolist())),
        sorted(map(tuple, np.argwhere(image.saturated[REF]))),
    )


def test_the_pieces_are_replaced_and_the_decoy_on_the_wings_dropped(scene):
    _, catalog, stars = scene
    star = stars[0]
    assert sorted(star.replaced.tolist()) == PIECE_ROWS
    # the first replaced row (it keeps its row) is the brightest piece in the reference band
    assert star.replaced[0] == N_FAR + int(np.argmax(PIECE_E[:, REF]))
    # the decoy sits where the star's PSF error swamps the photon noise and fits to nothing
    assert star.dropped.tolist() == [DECOY_ROW]
    removed = catalog["plocs"][0, [*star.replaced.tolist(), DECOY_ROW]].numpy()
    np.testing.assert_allclose(star.removed_plocs, removed)


def test_an_image_without_a_saturation_mask_or_with_an_empty_one_has_no_stars(scene):
    image, catalog, _ = scene
    unknown = SurveyImage(
        None, BANDS, image.images, image.background, image.psf_fwhm_arcsec, image.magzero, None
    )
    assert recover_saturated_stars(unknown, catalog, _models(), REF) == []
    empty = SurveyImage(
        None,
        BANDS,
        np.nan_to_num(image.images, nan=LEVEL),
        image.background,
        image.psf_fwhm_arcsec,
        image.magzero,
        None,
        saturated=np.zeros_like(image.saturated),
    )
    assert recover_saturated_stars(empty, catalog, _models(), REF) == []


# --------------------------------------------------------------------------- the catalog


def test_the_point_estimate_puts_the_star_in_the_brightest_piece_row(scene):
    _, _, stars = scene
    n = DECOY_ROW + 1
    extra = {
        "crowded": torch.zeros(1, n, 1),
        "source_type": torch.ones(1, n, 1),
        LOCAL_SKY_KEY: torch.zeros(1, n, 1),
        "galaxy_params": torch.arange(2 * n, dtype=torch.float32).reshape(1, n, 2),
    }
    extra["crowded"][0, stars[0].replaced[0]] = 1.0  # the reused row's block was crowded
    catalog = _full_catalog(extra)
    out = with_saturated_stars(catalog, stars, QUANTILES)
    star = stars[0]
    # kept rows in their order: the far stars, then the brightest piece's row holding the star
    assert int(out["n_sources"][0]) == N_FAR + 1
    assert all(v.shape[1] == N_FAR + 1 for k, v in out.items() if k != "n_sources")
    for key, value in catalog.items():
        if key != "n_sources":
            torch.testing.assert_close(out[key][:, :N_FAR], value[:, :N_FAR], equal_nan=True)
    row = N_FAR
    np.testing.assert_allclose(out["plocs"][0, row].numpy(), star.plocs, atol=1e-5)
    np.testing.assert_allclose(out["fluxes"][0, row].numpy(), star.fluxes, rtol=1e-6)
    assert out["prob_source"][0, row, 0] == 1 and out["prob_galaxy"][0, row, 0] == 0
    assert out["source_type"][0, row, 0] == 0 and out[LOCAL_SKY_KEY][0, row, 0] == 1
    assert out["crowded"][0, row, 0] == 1  # the reused row keeps its block's mark
    # a key the fit does not give stays the reused row's (the brightest piece's)
    torch.testing.assert_close(
        out["galaxy_params"][0, row], extra["galaxy_params"][0, star.replaced[0]]
    )
    low, flux, high = (
        out[k][0, row].double().numpy() for k in ("fluxes@0.05", "fluxes", "fluxes@0.95")
    )
    assert np.all(low <= flux) and np.all(flux <= high)
    # Gaussian quantiles: 1.645 sigma either side (float32 storage)
    np.testing.assert_allclose((high - flux) / star.fluxes_sigma, 1.6449, rtol=1e-4)
    np.testing.assert_allclose((flux - low) / star.fluxes_sigma, 1.6449, rtol=1e-4)
    np.testing.assert_allclose(
        out["plocs@0.95"][0, row].numpy() - out["plocs"][0, row].numpy(),
        1.6449 * star.plocs_sigma,
        rtol=1e-3,
    )


def test_a_star_without_pieces_is_a_new_row_with_nan_where_the_fit_says_nothing(scene):
    image, _, _ = scene
    n = N_FAR
    extra = {
        "crowded": torch.ones(1, n, 1),
        "galaxy_params": torch.ones(1, n, 2),
        "fluxes@0.5": torch.ones(1, n, 2),
    }
    far_only = _catalog(FAR, FAR_E, extra)
    stars = recover_saturated_stars(image, far_only, _models(), REF)
    assert len(stars) == 1 and len(stars[0].replaced) == 0 and len(stars[0].dropped) == 0
    # the same star as with the pieces there: they were not fitted as neighbours (within 1 %)
    assert stars[0].fluxes[REF] == pytest.approx(TRUE_E[REF] * NMGY, rel=0.03)
    out = with_saturated_stars(far_only, stars, QUANTILES)
    assert int(out["n_sources"][0]) == n + 1
    for key, value in far_only.items():  # the old rows untouched
        if key != "n_sources":
            torch.testing.assert_close(out[key][:, :n], value[:, :n])
    new = {k: v[0, n].double().numpy() for k, v in out.items() if k != "n_sources"}
    np.testing.assert_allclose(new["fluxes"], stars[0].fluxes, rtol=1e-6)
    assert new["prob_source"][0] == 1 and new["prob_galaxy"][0] == 0
    assert new["crowded"][0] == 0  # the fit's row, not the crowded model's
    assert np.all(np.isnan(new["galaxy_params"]))
    assert np.all(np.isnan(new["fluxes@0.5"]))  # a quantile not asked for
    assert np.all(new["fluxes@0.05"] < new["fluxes"]) and np.all(new["fluxes"] < new["fluxes@0.95"])


def test_a_padded_catalog_keeps_only_its_sources():
    """``n_sources`` below the tensors' length: the padding is not cataloged."""
    image = _scene()
    catalog = _full_catalog()
    padded = {k: v for k, v in catalog.items()}
    for key, value in list(padded.items()):
        if key != "n_sources":
            padded[key] = torch.cat([value, torch.full_like(value[:, :2], 7.0)], dim=1)
    padded_catalog = FullCatalog(*SHAPE, padded)
    stars = recover_saturated_stars(image, padded_catalog, _models(), REF)
    out = with_saturated_stars(padded_catalog, stars, QUANTILES)
    assert int(out["n_sources"][0]) == N_FAR + 1 == out["plocs"].shape[1]
    assert not (out["plocs"] == 7.0).any()


def test_a_joint_sample_loses_what_lies_on_the_blob_or_matches_a_lost_detection(scene):
    _, _, stars = scene
    star = stars[0]
    trail_end = np.array([55.5, 41.5])  # the last trail pixel's centre
    sample_plocs = [
        FAR[0],  # kept
        (40.0, 42.0),  # on the core: lost
        tuple(trail_end + [CLAIM_PX - 0.2, 0.0]),  # 1.8 px below the trail's end: lost
        tuple(trail_end + [CLAIM_PX + 0.3, 0.0]),  # 2.3 px below it: kept
        tuple(np.array(DECOY) + [0.0, MATCH_PX - 0.3]),  # 0.7 px from the dropped decoy: lost
        tuple(np.array(DECOY) + [0.0, -(MATCH_PX + 0.5)]),  # 1.5 px from it (and off the blob)
    ]
    on_blob = _distance_to_mask(sample_plocs, _mask(star.blob)) <= CLAIM_PX
    near_lost = [
        np.min(np.linalg.norm(star.removed_plocs - np.asarray(p), axis=-1)) <= MATCH_PX
        for p in sample_plocs
    ]
    assert on_blob.tolist() == [False, True, True, False, False, False]
    assert near_lost[4] and not any(near_lost[i] for i in (0, 3, 5))
    fluxes_e = np.full((len(sample_plocs), 2), 1e4)
    sample = _catalog(sample_plocs, fluxes_e)
    drawn = with_saturated_stars(sample, stars, rng=np.random.default_rng(5))
    again = with_saturated_stars(sample, stars, rng=np.random.default_rng(5))
    kept = [0, 3, 5]
    assert int(drawn["n_sources"][0]) == len(kept) + 1
    torch.testing.assert_close(drawn["plocs"][0, : len(kept)], sample["plocs"][0, kept])
    # the star is appended, a draw from its Gaussian: not the estimate, within 5 sigma of it
    flux = drawn["fluxes"][0, -1].double().numpy()
    position = drawn["plocs"][0, -1].double().numpy()
    assert np.all(np.abs(flux - star.fluxes) < 5 * star.fluxes_sigma)
    assert np.all(flux != star.fluxes)
    assert np.all(np.abs(position - star.plocs) < 5 * star.plocs_sigma)
    assert drawn["prob_source"][0, -1, 0] == 1 and drawn["prob_galaxy"][0, -1, 0] == 0
    for key in drawn.keys():  # the same seed, the same draw
        torch.testing.assert_close(drawn[key], again[key], equal_nan=True)


def _mask(blob):
    mask = np.zeros(SHAPE, dtype=bool)
    mask[tuple(blob.T)] = True
    return mask


def test_an_empty_joint_sample_gets_the_star():
    image = _scene()
    stars = recover_saturated_stars(image, _full_catalog(), _models(), REF)
    empty = _catalog(np.zeros((0, 2)), np.zeros((0, 2)))
    drawn = with_saturated_stars(empty, stars, rng=np.random.default_rng(0))
    assert int(drawn["n_sources"][0]) == 1 and drawn["fluxes"].shape == (1, 1, 2)


# --------------------------------------------------------------------------- wing correction

CAL_SIDE = 210
CAL_STAR = (105.4, 104.7, 1e7)  # r ~ 4.5 on this zero point: ~95 % of its light unusable
CAL_E = 3e5  # peaks below the saturation level
# 50 px apart, and >= 40 px from the saturated star: each calibrator's fit region (at most
# 25 px each way) holds no other star's core (the fits do not model neighbours)
CALIBRATORS = [
    (r + 0.3, c + 0.6)
    for r in range(30, CAL_SIDE - 27, 50)
    for c in range(30, CAL_SIDE - 27, 50)
    if math.hypot(r - CAL_STAR[0], c - CAL_STAR[1]) > 40
]


@functools.lru_cache(maxsize=3)
def _calibration_scene(beta):
    """One saturated star and isolated bright calibrators, drawn with ``beta``; one band."""
    stars = [CAL_STAR] + [(r, c, CAL_E) for r, c in CALIBRATORS]
    return _survey_image(_render((CAL_SIDE, CAL_SIDE), stars, beta=beta)[None], seed=1)


def _correction(image, positions, fluxes_e):
    return wing_correction(
        image.images[0] - image.background[0],
        image.background[0],
        image.saturated[0],
        _models(1)[0],
        np.asarray(positions, dtype=np.float64).reshape(-1, 2),
        np.asarray(fluxes_e, dtype=np.float64),
    )


@pytest.mark.parametrize("data_beta", [2.5, 4.5])
def test_the_image_own_stars_correct_wings_the_model_gets_wrong(data_beta):
    """Stars drawn with broader (2.5) or narrower (4.5) wings than the model's 3.5, same FWHM."""
    image = _calibration_scene(data_beta)
    shape = (CAL_SIDE, CAL_SIDE)
    n = len(CALIBRATORS)
    assert n >= 10 and image.saturated[0].sum() > 30
    assert _distance_to_mask(CALIBRATORS, image.saturated[0]).min() > 30  # none saturated
    calibrated = recover_saturated_stars(
        image, _catalog(CALIBRATORS, np.full((n, 1), CAL_E), shape=shape), _models(1), 0
    )
    # too few calibrators (MIN_CALIBRATION_STARS - 1): no correction, the raw wing fit
    few = MIN_CALIBRATION_STARS - 1
    assert _correction(image, CALIBRATORS[:few], [CAL_E] * few) is None
    raw = recover_saturated_stars(
        image, _catalog(CALIBRATORS[:few], np.full((few, 1), CAL_E), shape=shape), _models(1), 0
    )
    assert len(raw) == len(calibrated) == 1
    truth = CAL_STAR[2] * NMGY
    raw_ratio = raw[0].fluxes[0] / truth
    # broader true wings than the model's make a wing fit bright (here +69 %), narrower faint
    # (-34 %): far beyond its noise (0.3 %)
    assert raw_ratio > 1.3 if data_beta < BETA else raw_ratio < 0.8
    correction = _correction(image, CALIBRATORS, [CAL_E] * n)
    assert isinstance(correction, WingCorrection)
    assert correction.log_ratio.shape[0] >= MIN_CALIBRATION_STARS
    factor, spread = correction(calibrated[0].lost[0])
    # the calibrators cut to the star's lost share show the star's own bias: the log-odds
    # interpolation between cut radii (3.5 and 5 px here) is good to a few percent
    assert factor == pytest.approx(raw_ratio, rel=0.06)
    assert 0 < spread < 0.05
    error_raw = abs(raw_ratio - 1)
    error_calibrated = abs(calibrated[0].fluxes[0] / truth - 1)
    # most of the bias is taken out (measured: 0.8 % and 3.8 % left of 69 % and 34 %)
    assert error_calibrated < 0.05 and error_calibrated < error_raw / 5
    # and the reported error shrinks from the conservative floor to the calibrators' spread
    assert calibrated[0].fluxes_sigma[0] < raw[0].fluxes_sigma[0]


def test_an_exact_model_needs_no_correction():
    image = _calibration_scene(BETA)
    correction = _correction(image, CALIBRATORS, [CAL_E] * len(CALIBRATORS))
    assert correction is not None
    # a dozen calibrators with >~1e4 e left on their wings at these cuts: 2.5 % is ~3 sigma
    for lost in (0.75, 0.9, 0.95):
        factor, _ = correction(lost)
        assert factor == pytest.approx(1.0, abs=0.025), lost
    # the 1.5 px cuts lose little light, so fit as well as whole (photon noise ~0.3 %)
    assert np.all(np.abs(correction.log_ratio[:, 1]) < 0.01)


def test_calibrators_need_to_be_isolated_and_numerous_enough():
    """Which stars calibrate comes from the catalog: a bright companion within 8 px rules one out."""
    image = _calibration_scene(BETA)
    chosen = CALIBRATORS[:MIN_CALIBRATION_STARS]
    assert isinstance(_correction(image, chosen, [CAL_E] * len(chosen)), WingCorrection)
    for share, usable in ((0.10, False), (0.02, True)):
        companions = [(r + 3.0, c + 4.0) for r, c in chosen]  # 5 px away (not in the image)
        positions = [*chosen, *companions]
        fluxes = [CAL_E] * len(chosen) + [share * CAL_E] * len(companions)
        found = _correction(image, positions, fluxes)
        assert (found is not None) == usable, share


# --------------------------------------------------------------------------- predictor


def _predictor(settings):
    """Just what ``Predictor.add_saturated_stars`` reads of a predictor."""
    return SimpleNamespace(star_photometry=settings, encoder=SimpleNamespace(reference_index=REF))


def test_the_predictor_adds_saturated_stars_only_when_asked_and_told_what_saturated(scene):
    image, catalog, _ = scene
    sample = _catalog([FAR[0], (40.0, 42.0)], [[1e4, 2e4], [1e4, 3e4]])
    on = StarPhotometry(pixel_scale_arcsec=0.396, psf_beta=BETA)
    unknown = SurveyImage(
        None, BANDS, image.images, image.background, image.psf_fwhm_arcsec, image.magzero, None
    )
    nothing = SurveyImage(
        None,
        BANDS,
        np.nan_to_num(image.images),
        image.background,
        image.psf_fwhm_arcsec,
        image.magzero,
        None,
        saturated=np.zeros_like(image.saturated),
    )
    off = StarPhotometry(0.396, BETA, saturated_stars=False)
    for settings, img in ((None, image), (off, image), (on, unknown), (on, nothing)):
        out, samples = Predictor.add_saturated_stars(
            _predictor(settings), img, catalog, [sample], QUANTILES
        )
        assert out is catalog and samples[0] is sample
    torch.manual_seed(11)
    out, samples = Predictor.add_saturated_stars(
        _predictor(on), image, catalog, [sample], QUANTILES
    )
    # the header PSF (0.396 * 3 arcsec at 0.396 arcsec/px, beta 3.5) is the scene's exact PSF
    expected = with_saturated_stars(
        catalog, recover_saturated_stars(image, catalog, _models(), REF), QUANTILES
    )
    assert set(out.keys()) == set(expected.keys())
    for key in expected.keys():
        torch.testing.assert_close(out[key], expected[key], equal_nan=True)
    # the sample loses its piece on the core and gets the star, drawn from the torch seed
    assert int(samples[0]["n_sources"][0]) == 2
    star_flux = samples[0]["fluxes"][0, -1].double().numpy()
    assert star_flux[REF] == pytest.approx(TRUE_E[REF] * NMGY, rel=0.5)
    torch.manual_seed(11)
    _, again = Predictor.add_saturated_stars(_predictor(on), image, catalog, [sample], QUANTILES)
    torch.testing.assert_close(again[0]["fluxes"], samples[0]["fluxes"])
