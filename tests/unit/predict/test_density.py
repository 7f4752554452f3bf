import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial import cKDTree

from bliss.catalog import FullCatalog
from bliss.errors import BlissConfigError, BlissValueError
from bliss.posterior import BernoulliFactor, PriorShift, TileLocationFactor, VariationalPosterior
from bliss.posterior.factors import CountFactor
from bliss.predict.density import (
    DensitySettings,
    DensityShift,
    clamped_poisson_log_pmf,
    clamped_poisson_mean,
    estimate_density,
    estimate_galaxy_fraction,
    merge_unresolved,
)
from bliss.predict.model import model_conditions
from bliss.predict.predictor import Predictor
from tests.unit.predict.test_predictor import encoder, make_image  # noqa: F401 (fixture)

TRAIN_RATE = 0.0084  # the generalist's: 12 per arcmin^2 in 4 px SDSS tiles


@pytest.mark.parametrize("max_count", [1, 3])
def test_clamped_poisson_matches_scipy(max_count):
    rate = torch.tensor([1e-4, 0.05, 0.7, 4.0], dtype=torch.float64)
    pmf = clamped_poisson_log_pmf(rate, max_count).exp().numpy()
    for k in range(max_count):
        assert np.allclose(pmf[:, k], stats.poisson.pmf(k, rate.numpy()), rtol=1e-10)
    assert np.allclose(pmf[:, -1], stats.poisson.sf(max_count - 1, rate.numpy()), rtol=1e-8)
    expected = (pmf * np.arange(max_count + 1)).sum(-1)
    assert np.allclose(clamped_poisson_mean(rate, max_count).numpy(), expected)


@pytest.mark.parametrize("max_count", [1, 3])
def test_reweight_is_bayes_rule(max_count):
    # a posterior that is prior x likelihood, moved to another prior, is new prior x likelihood
    torch.manual_seed(0)
    count = CountFactor(max_count)
    log_lik = torch.randn(2, 3, 4, max_count + 1)
    old = clamped_poisson_log_pmf(torch.tensor(0.01), max_count)
    new = clamped_poisson_log_pmf(torch.tensor(0.3), max_count)
    logits = old + log_lik
    params = logits[..., 1:] - logits[..., :1] if max_count == 1 else logits
    moved = count.probabilities(count.reweight(params, (new - old).expand_as(log_lik)))
    assert torch.allclose(moved, torch.softmax(new + log_lik, -1), atol=1e-6)


def synthetic_posteriors(rate: float, n_blocks: int, seed: int, signal: float = 2.5):
    """Bernoulli count posteriors at the training prior, from an exact likelihood.

    Each tile of ``n_blocks`` 32 x 32 blocks holds a source with probability ``1 - exp(-rate)``
    and shows ``x ~ N(signal * n, 1)``; its posterior logit at the training prior is the
    log-likelihood ratio plus the training prior's log odds.
    """
    g = torch.Generator().manual_seed(seed)
    n = (torch.rand(1, 32, 32 * n_blocks, generator=g) < 1 - math.exp(-rate)).double()
    x = signal * n + torch.randn(n.shape, generator=g, dtype=torch.float64)
    p_train = 1 - math.exp(-TRAIN_RATE)
    logit = signal * x - signal**2 / 2 + math.log(p_train / (1 - p_train))
    return logit.unsqueeze(-1), n


def detections(params):
    return (params[..., 0] > 0).long()


def test_recovers_a_denser_field():
    # ratio 20 (a crowded field): the maximum-likelihood rate of 1024 tiles is within ~10 %;
    # averaged over 8 blocks the mean ratio is within 5 % (4 standard errors)
    params, _ = synthetic_posteriors(20 * TRAIN_RATE, n_blocks=8, seed=1)
    shift = estimate_density(
        CountFactor(1), params, detections(params), TRAIN_RATE, block_tiles=32, min_ratio=3.0
    )
    assert shift.moved
    assert shift.ratio.shape == (1, 1, 8)
    assert abs(float(shift.ratio.mean()) / 20 - 1) < 0.05
    assert (shift.ratio > 14).all() and (shift.ratio < 27).all()
    # the correction is the ratio of the two clamped Poisson priors: log-odds ratio of ~log 21
    log_odds = shift.log_prior_ratio[..., 1] - shift.log_prior_ratio[..., 0]
    assert float(log_odds.mean()) == pytest.approx(math.log(21.0), abs=0.15)


def test_training_density_is_left_alone():
    # 200 blocks at the training rate (~9 sources each): none passes 3x the training density,
    # so the correction is exactly zero and the point estimates are those of the network
    params, _ = synthetic_posteriors(TRAIN_RATE, n_blocks=200, seed=2)
    shift = estimate_density(
        CountFactor(1), params, detections(params), TRAIN_RATE, block_tiles=32, min_ratio=3.0
    )
    assert not shift.moved
    assert torch.equal(shift.log_prior_ratio, torch.zeros_like(shift.log_prior_ratio))
    assert shift.summary() == {"max_ratio": 1.0, "moved_share": 0.0}


def test_more_detections_where_the_field_is_denser():
    # the moved posterior finds more of the true sources at a ratio of 20, at a higher F1
    params, truth = synthetic_posteriors(20 * TRAIN_RATE, n_blocks=4, seed=3, signal=3.0)
    count = CountFactor(1)
    shift = estimate_density(count, params, detections(params), TRAIN_RATE)

    def f1(p):
        on = (torch.sigmoid(p[..., 0]) > 0.5).double()
        tp = float((on * truth).sum())
        return 2 * tp / float(on.sum() + truth.sum())

    assert f1(count.reweight(params, shift.log_prior_ratio.double())) > f1(params) + 0.05


def test_unresolved_pairs_are_merged_only_where_moved():
    # two 32 px blocks, the left one moved to 20x the training density: its pair 0.5 px apart
    # keeps the more probable source; the same pair in the right block is left alone, and so
    # is a pair 2 px apart
    plocs = [[10.0, 10.0], [10.0, 10.5], [20.0, 10.0], [20.0, 12.0], [10.0, 40.0], [10.5, 40.0]]
    prob = [0.6, 0.9, 0.8, 0.8, 0.7, 0.95]
    catalog = FullCatalog(
        32,
        64,
        {
            "n_sources": torch.tensor([6]),
            "plocs": torch.tensor([plocs]),
            "prob_source": torch.tensor([prob]).unsqueeze(-1),
        },
    )
    shift = DensityShift(torch.zeros(1, 8, 16, 2), torch.tensor([[[20.0, 1.0]]]), block_tiles=8)
    merged = merge_unresolved(catalog, shift, tile_slen=4, min_separation_px=1.2)
    assert int(merged["n_sources"][0]) == 5
    assert merged["plocs"][0, :5].tolist() == plocs[1:]
    unmoved = DensityShift(shift.log_prior_ratio, torch.ones(1, 1, 2), block_tiles=8)
    assert merge_unresolved(catalog, unmoved, 4, 1.2) is catalog
    # the default distance is below the Sparrow limit of SDSS seeing (0.85 FWHM, 2.8 px at
    # 1.3"): the pair 2 px apart is one source too, a pair 3 px apart is two
    default = DensitySettings().min_separation_px
    assert 2.0 < default < 0.85 * 1.3 / 0.396
    merged = merge_unresolved(catalog, shift, tile_slen=4, min_separation_px=default)
    assert int(merged["n_sources"][0]) == 4
    apart = FullCatalog(
        32,
        64,
        {
            "n_sources": torch.tensor([2]),
            "plocs": torch.tensor([[[10.0, 10.0], [10.0, 13.0]]]),
            "prob_source": torch.tensor([[0.6, 0.9]]).unsqueeze(-1),
        },
    )
    assert merge_unresolved(apart, shift, tile_slen=4, min_separation_px=default) is apart


def test_a_joint_sample_keeps_the_light_of_a_star_drawn_twice():
    # a sample has no prob_source and its fluxes are not fitted again: the pair in the moved
    # block becomes one source with their summed fluxes at the flux-weighted position
    plocs = [[10.0, 10.0], [10.0, 10.6], [10.0, 40.0], [10.5, 40.0]]
    fluxes = [[1.0, 2.0], [3.0, 6.0], [5.0, 5.0], [5.0, 5.0]]
    sample = FullCatalog(
        32,
        64,
        {
            "n_sources": torch.tensor([4]),
            "plocs": torch.tensor([plocs]),
            "fluxes": torch.tensor([fluxes]),
        },
    )
    shift = DensityShift(torch.zeros(1, 8, 16, 2), torch.tensor([[[20.0, 1.0]]]), block_tiles=8)
    merged = merge_unresolved(sample, shift, tile_slen=4, min_separation_px=1.2)
    assert int(merged["n_sources"][0]) == 3
    assert merged["fluxes"][0, 0].tolist() == [4.0, 8.0]
    assert merged["plocs"][0, 0].tolist() == pytest.approx([10.0, 10.45])
    assert merged["plocs"][0, 1:3].tolist() == plocs[2:]  # the unmoved block's pair stays


def test_faint_sky_alone_does_not_move_a_block():
    # every tile 20 % likely to hold a source (a real sky's galaxies below the detection limit)
    # makes the likeliest rate 25 times the training one, but nothing is detected: not moved
    params = torch.full((1, 32, 64, 1), math.log(0.2 / 0.8), dtype=torch.float64)
    shift = estimate_density(CountFactor(1), params, detections(params), TRAIN_RATE)
    assert not shift.moved
    # the right block: every tile 99 % sure and detected; a tile of one slot that is always
    # full has no finite likeliest rate, so the block goes to the cap of 30 per tile
    params[0, :, 32:] = 5.0
    shift = estimate_density(CountFactor(1), params, detections(params), TRAIN_RATE)
    assert shift.ratio[0, 0, 0] == 1.0
    assert float(shift.ratio[0, 0, 1]) == pytest.approx(30.0 / TRAIN_RATE, rel=1e-4)


def test_a_small_image_is_not_dense_for_a_few_stars():
    # 3 sure stars in an 8 x 8-tile cut-out are 6 times the training rate of its tiles, but 3
    # sources say nothing about a density: counted against a whole block, it is not moved
    params = torch.full((1, 8, 8, 1), -8.0, dtype=torch.float64)
    params[0, 2, 2] = params[0, 5, 5] = params[0, 2, 6] = 8.0
    shift = estimate_density(CountFactor(1), params, detections(params), 0.0084, min_ratio=5.0)
    assert not shift.moved


def test_bad_settings_are_refused():
    with pytest.raises(BlissConfigError, match="predict.density.block_px"):
        DensitySettings(block_px=0)
    with pytest.raises(BlissConfigError, match="predict.density.min_ratio"):
        DensitySettings(min_ratio=0.5)
    with pytest.raises(BlissConfigError, match="predict.density.min_separation_px"):
        DensitySettings(min_separation_px=-1.0)
    with pytest.raises(BlissConfigError, match="predict.density.min_galaxy_fraction"):
        DensitySettings(min_galaxy_fraction=0.0)
    with pytest.raises(BlissConfigError, match="positive rate"):
        estimate_density(CountFactor(1), torch.zeros(1, 4, 4, 1), torch.zeros(1, 4, 4), 0.0)


def test_model_conditions_read_the_training_rate():
    prior = {
        "_target_": "bliss.simulator.prior.CatalogPrior",
        "density_per_arcmin2": 12.0,
        "tile_slen": 4,
        "pixel_scale_arcsec": 0.396,
    }
    model = model_conditions(("r",), {"prior": prior})
    assert model.count_rate_per_tile == pytest.approx(12.0 * (4 * 0.396 / 60) ** 2)
    assert model.galaxy_fraction == 0.5  # CatalogPrior's default share
    cluster = {**prior, "_target_": "bliss.simulator.cluster_prior.StarClusterPrior"}
    assert model_conditions(("r",), {"prior": cluster}).count_rate_per_tile is None
    assert model_conditions(("r",), {"prior": cluster}).galaxy_fraction is None
    stars = {**prior, "prob_galaxy": 0.0}  # nothing to move a type prior from
    assert model_conditions(("r",), {"prior": stars}).galaxy_fraction is None


def test_predictor_records_the_shift(encoder):  # noqa: F811
    # an untrained network's P(source) is ~0.5 everywhere: against a training rate of 1e-4 per
    # tile every block reads as far denser, and the predictor moves it and says so
    image = make_image(height=64, width=64)
    dense = Predictor(
        encoder,
        window_px=32,
        progress=False,
        density=DensitySettings(block_px=32),
        count_rate_per_tile=1e-4,
    )
    dense.predict(image)
    assert dense.density_shift is not None and dense.density_shift.moved
    assert dense.density_shift.ratio.shape == (1, 2, 2)
    assert dense.density_shift.galaxy_fraction is None  # no training share given: types stay
    for sample in dense.sample(image, 2):  # every block is moved: no star is drawn twice
        n = int(sample["n_sources"][0])
        assert n > 1 and not cKDTree(sample["plocs"][0, :n].numpy()).query_pairs(1.2)
    typed = Predictor(
        encoder,
        window_px=32,
        progress=False,
        density=DensitySettings(block_px=32),
        count_rate_per_tile=1e-4,
        galaxy_fraction=0.5,
    )
    typed.predict(image)
    fraction = typed.density_shift.galaxy_fraction
    assert fraction.shape == (1, 2, 2) and ((fraction >= 0.01) & (fraction <= 0.99)).all()
    assert typed.density_shift.galaxy_log_odds.shape == (1, 16, 16)
    plain = Predictor(encoder, window_px=32, progress=False, count_rate_per_tile=1e-4)
    plain.predict(image)
    assert plain.density_shift is None
    # a training rate no block reaches: nothing moves, and the catalog (decided once, by the
    # first pass) is the one without the adaptation, row for row
    sparse = Predictor(
        encoder,
        window_px=32,
        progress=False,
        density=DensitySettings(block_px=32),
        count_rate_per_tile=0.9,
    )
    unmoved = sparse.predict(image)
    assert not sparse.density_shift.moved
    off = plain.predict(image)
    assert unmoved.keys() == off.keys()
    for key in off.keys():
        assert torch.equal(unmoved[key], off[key]), key
    with pytest.raises(BlissConfigError, match="predict.density.block_px=30"):
        Predictor(encoder, density=DensitySettings(block_px=30), count_rate_per_tile=1e-4)


def test_type_reweight_is_bayes_rule():
    # the source-type logit of every slot gains the log-odds shift, the other factors keep theirs
    torch.manual_seed(0)
    posterior = VariationalPosterior(
        {
            "n_sources": CountFactor(2),
            "source_type": BernoulliFactor("source_type"),
            "locs": TileLocationFactor("locs", dim=2),
        },
        2,
    )
    log_lik = torch.randn(1, 3, 4, 2)  # log P(x | galaxy) - log P(x | star) of each slot
    train, new = 0.5, 0.03
    logit = lambda f: math.log(f / (1 - f))  # noqa: E731
    params = torch.randn(1, 3, 4, posterior.n_params)
    split = posterior.split(params)
    split["source_type"][..., 0] = log_lik + logit(train)
    params = torch.cat(
        [split["n_sources"], *(v.flatten(-2) for k, v in split.items() if k != "n_sources")], -1
    )
    shift = PriorShift(galaxy=torch.full((1, 3, 4), logit(new) - logit(train)))
    moved = posterior.reweight(params, shift)
    assert torch.allclose(
        posterior.prob_galaxy(moved), torch.sigmoid(log_lik + logit(new)), atol=1e-6
    )
    for name in ("n_sources", "locs"):
        assert torch.equal(posterior.split(moved)[name], posterior.split(params)[name])
    stars_only = VariationalPosterior(
        {"n_sources": CountFactor(1), "locs": TileLocationFactor("locs", dim=2)}, 1
    )
    with pytest.raises(BlissValueError, match="source_type"):
        stars_only.reweight(torch.zeros(1, 1, 1, stars_only.n_params), shift)


def synthetic_types(fractions: list[float], seed: int, signal: float = 2.0):
    """Type posteriors at a training share of 0.5 of one source per tile, blocks of 32 x 32 tiles.

    A source is a galaxy with its block's fraction and shows ``x ~ N(+-signal / 2, 1)``; its
    posterior at the training share is the likelihood ratio (log odds ``signal * x``).
    """
    g = torch.Generator().manual_seed(seed)
    share = torch.tensor(fractions).repeat_interleave(32).expand(32, -1)[None]
    galaxy = torch.rand(share.shape, generator=g) < share
    x = signal * (galaxy.double() - 0.5) + torch.randn(
        share.shape, generator=g, dtype=torch.float64
    )
    return torch.sigmoid(signal * x).unsqueeze(-1), galaxy


def test_recovers_the_galaxy_fraction_of_moved_blocks():
    # 1024 sources a block whose types the pixels half tell (signal 2: 16 % of them on the wrong
    # side of 0.5): the maximum-likelihood share is within 0.03 of the truth (a standard error of
    # ~0.01); an unmoved block keeps the training share and its types
    prob, galaxy = synthetic_types([0.05, 0.6, 0.3], seed=3)
    ratio = torch.tensor([[[20.0, 20.0, 1.0]]])
    shift = DensityShift(torch.zeros(1, 32, 96, 2), ratio, 32)
    moved = estimate_galaxy_fraction(shift, prob, torch.ones_like(prob, dtype=torch.bool), 0.5)
    fraction = moved.galaxy_fraction[0, 0]
    assert abs(float(fraction[0]) - 0.05) < 0.03 and abs(float(fraction[1]) - 0.6) < 0.03
    assert float(fraction[2]) == 0.5 and (moved.galaxy_log_odds[0, :, 64:] == 0).all()
    assert moved.summary()["min_galaxy_fraction"] == pytest.approx(float(fraction[0]))
    # Bayes' rule under the estimated share calls fewer stars galaxies in the star-rich block
    odds = torch.logit(prob[..., 0]) + moved.galaxy_log_odds
    wrong_before = ((prob[0, :, :32, 0] > 0.5) != galaxy[0, :, :32]).float().mean()
    wrong_after = ((odds[0, :, :32] > 0) != galaxy[0, :, :32]).float().mean()
    assert wrong_after < wrong_before / 2


def test_a_block_of_stars_stops_at_the_floor():
    # all stars: the likeliest share is 0, where no galaxy could be reported; it stops at the floor
    prob, _ = synthetic_types([0.0], seed=4)
    shift = DensityShift(torch.zeros(1, 32, 32, 2), torch.tensor([[[20.0]]]), 32)
    moved = estimate_galaxy_fraction(
        shift, prob, torch.ones_like(prob, dtype=torch.bool), 0.5, 0.01
    )
    assert float(moved.galaxy_fraction) == pytest.approx(0.01, rel=1e-4)
    assert moved.prior_shift.galaxy is moved.galaxy_log_odds
    with pytest.raises(BlissConfigError, match="galaxy fraction"):
        estimate_galaxy_fraction(shift, prob, torch.ones_like(prob, dtype=torch.bool), 1.0)
