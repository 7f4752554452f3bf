"""Property tests over every variational factor, plus checks against reference densities."""

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from scipy import stats
from torch.distributions import Bernoulli, Categorical, LogNormal, Normal

from bliss.errors import BlissConfigError
from bliss.posterior.factors import (
    BernoulliFactor,
    CountFactor,
    Factor,
    LogitNormalFactor,
    LogNormalFactor,
    NormalFactor,
    PositionAngleFactor,
    TileLocationFactor,
    TruncatedNormalFactor,
)

BATCH = (2, 3, 3, 2)  # b ht wt m for per-slot factors

# name -> (constructor, support check on values of shape ... d)
SLOT_FACTORS: dict[str, tuple[Callable[[], Factor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "normal": (lambda: NormalFactor("shear", dim=2), lambda v: torch.isfinite(v)),
    "lognormal": (lambda: LogNormalFactor("fluxes", dim=3), lambda v: v > 0),
    "logitnormal": (lambda: LogitNormalFactor("disk_q"), lambda v: (v > 0) & (v < 1)),
    "logitnormal_shifted": (
        lambda: LogitNormalFactor("offset", dim=2, low=-1.0, high=3.0),
        lambda v: (v > -1) & (v < 3),
    ),
    "truncnormal": (
        lambda: TruncatedNormalFactor("locs", dim=2),
        lambda v: (v >= 0) & (v <= 1),
    ),
    "tile_location": (
        lambda: TileLocationFactor("locs", dim=2),
        lambda v: (v >= 0) & (v <= 1),
    ),
    "bernoulli": (lambda: BernoulliFactor("source_type"), lambda v: (v == 0) | (v == 1)),
    "position_angle": (
        lambda: PositionAngleFactor("beta_rad"),
        lambda v: (v >= 0) & (v < math.pi),
    ),
}
COUNT_FACTORS = {"count1": lambda: CountFactor(1), "count3": lambda: CountFactor(3)}
ALL_FACTORS = [*SLOT_FACTORS, *COUNT_FACTORS]
CONTINUOUS = [name for name in SLOT_FACTORS if name != "bernoulli"]


def _build(name: str) -> Factor | CountFactor:
    return COUNT_FACTORS[name]() if name in COUNT_FACTORS else SLOT_FACTORS[name][0]()


def _params(factor: Factor | CountFactor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    shape = BATCH[:3] if isinstance(factor, CountFactor) else BATCH
    return torch.randn(*shape, factor.n_params, dtype=dtype)


def _support(name: str, factor: Factor | CountFactor) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(factor, CountFactor):
        return lambda n: (n >= 0) & (n <= factor.max_sources)
    return SLOT_FACTORS[name][1]


# ---- properties shared by every factor ------------------------------------------------------


@pytest.mark.parametrize("name", ALL_FACTORS)
def test_sample_shape_and_support(name: str) -> None:
    factor = _build(name)
    params = _params(factor)
    sample = factor.sample(params)
    expected = BATCH[:3] if isinstance(factor, CountFactor) else (*BATCH, factor.dim)
    assert sample.shape == expected
    assert _support(name, factor)(sample).all()


@pytest.mark.parametrize("name", ALL_FACTORS)
def test_log_prob_finite_on_samples(name: str) -> None:
    factor = _build(name)
    params = _params(factor)
    log_prob = factor.log_prob(params, factor.sample(params))
    assert log_prob.shape == params.shape[:-1]
    assert torch.isfinite(log_prob).all()


@pytest.mark.parametrize("name", ALL_FACTORS)
def test_point_estimate_inside_support(name: str) -> None:
    factor = _build(name)
    # scaled raw outputs reach the saturated ends of sigmoids and softmaxes too
    params = 5 * _params(factor)
    estimate = factor.point_estimate(params)
    assert estimate.shape == factor.sample(params).shape
    support = _support(name, factor)
    if name.startswith("logitnormal"):
        # sigmoid(5 * randn) can round to exactly the bound in float32; the closed interval is
        # what a float can promise
        assert ((estimate >= factor.low) & (estimate <= factor.high)).all()
        assert support(factor.point_estimate(params / 5)).all()
    else:
        assert support(estimate).all()


@pytest.mark.parametrize("name", ALL_FACTORS)
def test_gradients_reach_every_raw_parameter(name: str) -> None:
    factor = _build(name)
    params = _params(factor, torch.float64).requires_grad_(True)
    with torch.no_grad():
        value = factor.sample(params)
    factor.log_prob(params, value).sum().backward()
    assert params.grad is not None
    assert torch.isfinite(params.grad).all()
    # random continuous inputs: an exactly zero gradient means a parameter is ignored
    assert (params.grad != 0).all()


@pytest.mark.parametrize("name", list(SLOT_FACTORS))
def test_quantile_monotone_in_q(name: str) -> None:
    factor = _build(name)
    params = _params(factor)
    levels = [0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98]
    quantiles = torch.stack([factor.quantile(params, q) for q in levels])
    steps = quantiles.diff(dim=0)
    assert (steps >= 0).all()
    if name in CONTINUOUS:
        assert (steps > 0).all()


@pytest.mark.parametrize(
    "name", [n for n in CONTINUOUS if n not in ("position_angle", "tile_location")]
)
def test_closed_form_quantile_matches_distribution_icdf(name: str) -> None:
    factor = _build(name)
    params = _params(factor, torch.float64)
    for q in (0.1, 0.5, 0.9):
        reference = factor.distribution(params).icdf(
            torch.full(params.shape[:-1] + (factor.dim,), q, dtype=torch.float64)
        )
        # float64 throughout; the truncated normal clamps its CDF to [1e-7, 1 - 1e-7]
        torch.testing.assert_close(factor.quantile(params, q), reference, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_median_is_point_estimate(name: str) -> None:
    factor = _build(name)
    params = _params(factor, torch.float64)
    torch.testing.assert_close(
        torch.remainder(factor.quantile(params, 0.5), math.pi)
        if name == "position_angle"
        else factor.quantile(params, 0.5),
        factor.point_estimate(params),
        atol=1e-9,
        rtol=1e-9,
    )


# ---- references ------------------------------------------------------------------------------


def _loc_scale(params: torch.Tensor, min_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Documented layout: interleaved ``(loc, raw scale)`` pairs per coordinate."""
    raw = params.unflatten(-1, (-1, 2))
    return raw[..., 0], F.softplus(raw[..., 1]) + min_scale


def test_normal_matches_torch() -> None:
    factor = NormalFactor("shear", dim=2, min_scale=0.01)
    params = _params(factor, torch.float64)
    value = torch.randn(*BATCH, 2, dtype=torch.float64)
    loc, scale = _loc_scale(params, 0.01)
    reference = Normal(loc, scale).log_prob(value).sum(-1)
    torch.testing.assert_close(factor.log_prob(params, value), reference, atol=1e-12, rtol=1e-12)


def test_lognormal_matches_torch() -> None:
    factor = LogNormalFactor("fluxes", dim=3)
    params = _params(factor, torch.float64)
    value = torch.rand(*BATCH, 3, dtype=torch.float64) * 10 + 0.01
    loc, scale = _loc_scale(params, factor.min_scale)
    reference = LogNormal(loc, scale).log_prob(value).sum(-1)
    torch.testing.assert_close(factor.log_prob(params, value), reference, atol=1e-12, rtol=1e-12)


def test_bernoulli_matches_torch() -> None:
    factor = BernoulliFactor("source_type")
    params = _params(factor, torch.float64)
    value = torch.randint(0, 2, (*BATCH, 1)).double()
    reference = Bernoulli(logits=params).log_prob(value).sum(-1)
    torch.testing.assert_close(factor.log_prob(params, value), reference, atol=1e-12, rtol=1e-12)


def test_count_matches_torch() -> None:
    single, multi = CountFactor(1), CountFactor(3)
    logits1 = _params(single, torch.float64)
    counts1 = torch.randint(0, 2, BATCH[:3])
    expected1 = Bernoulli(logits=logits1[..., 0]).log_prob(counts1.double())
    torch.testing.assert_close(single.log_prob(logits1, counts1), expected1, atol=1e-12, rtol=1e-12)
    logits3 = _params(multi, torch.float64)
    counts3 = torch.randint(0, 4, BATCH[:3])
    expected3 = Categorical(logits=logits3).log_prob(counts3)
    torch.testing.assert_close(multi.log_prob(logits3, counts3), expected3, atol=1e-12, rtol=1e-12)


def test_truncated_normal_matches_scipy_and_normalises() -> None:
    factor = TruncatedNormalFactor("locs", dim=2)
    params = _params(factor, torch.float64)
    raw_loc, scale = _loc_scale(params, factor.min_scale)
    loc = torch.sigmoid(raw_loc)  # documented: the untruncated mean lies inside [low, high]
    value = torch.rand(*BATCH, 2, dtype=torch.float64)
    loc_np, scale_np = loc.numpy(), scale.numpy()
    per_coord = stats.truncnorm.logpdf(
        value.numpy(), -loc_np / scale_np, (1 - loc_np) / scale_np, loc=loc_np, scale=scale_np
    )
    reference = torch.from_numpy(per_coord.sum(-1))
    # float64 on both sides; scipy uses log-space tails, bliss a direct CDF difference
    torch.testing.assert_close(factor.log_prob(params, value), reference, atol=1e-8, rtol=1e-8)

    # the density of one coordinate integrates to 1 on [0, 1] (trapezoid rule, 4001 points)
    grid = torch.linspace(0, 1, 4001, dtype=torch.float64)
    one = params[0, 0, 0, 0, :2].expand(grid.numel(), 2)
    density = factor.distribution(one).log_prob(grid.unsqueeze(-1)).exp()[:, 0]
    # trapezoid error ~ h^2 f''/12 with h = 2.5e-4 and a smooth density: far below 1e-5
    assert abs(torch.trapezoid(density, grid).item() - 1) < 1e-5
    # outside the support the density is zero
    assert (
        factor.log_prob(params, torch.full((*BATCH, 2), 1.5, dtype=torch.float64))
        .eq(-math.inf)
        .all()
    )


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-1.0, 3.0)])
def test_logit_normal_change_of_variables(low: float, high: float) -> None:
    factor = LogitNormalFactor("q", dim=2, low=low, high=high)
    params = _params(factor, torch.float64)
    loc, scale = _loc_scale(params, factor.min_scale)
    unit = torch.rand(*BATCH, 2, dtype=torch.float64) * 0.98 + 0.01
    value = low + (high - low) * unit
    # y = low + (high - low) sigmoid(x):  p(y) = N(x) / |dy/dx|, dy/dx = (high - low) u (1 - u)
    jacobian = (high - low) * unit * (1 - unit)
    reference = (Normal(loc, scale).log_prob(torch.logit(unit)) - torch.log(jacobian)).sum(-1)
    torch.testing.assert_close(factor.log_prob(params, value), reference, atol=1e-9, rtol=1e-9)


# ---- family-specific behaviour ---------------------------------------------------------------


def test_lognormal_point_estimate_is_median() -> None:
    factor = LogNormalFactor("fluxes")
    raw_scale = math.log(math.e - 1)  # softplus^-1(1): log-scale 1, so mean and mode are far off
    params = torch.tensor([0.7, raw_scale]).expand(40_000, 2)
    estimate = factor.point_estimate(params[:1])
    torch.testing.assert_close(estimate, torch.full((1, 1), math.exp(0.7)), rtol=1e-5, atol=0)
    below = (factor.sample(params) < estimate).double().mean().item()
    # binomial sd = sqrt(0.25 / 40000) = 0.0025; 0.015 is 6 sd. The mode would give ~0.16 and
    # the mean ~0.69, both far outside.
    assert abs(below - 0.5) < 0.015


def test_position_angle_periodic_and_normalised() -> None:
    factor = PositionAngleFactor("beta_rad")
    params = torch.randn(6, 3, dtype=torch.float64)
    params[:, 2] = torch.tensor([-2.0, 0.0, 1.0, 3.0, 10.0, 40.0])  # kappa from ~0.13 to ~40
    value = torch.rand(6, 1, dtype=torch.float64) * math.pi
    base = factor.log_prob(params, value)
    for shift in (math.pi, -math.pi, 3 * math.pi):
        # float64 remainder of an argument up to ~10: round-off below 1e-10
        torch.testing.assert_close(factor.log_prob(params, value + shift), base, atol=1e-10, rtol=0)
    grid = torch.linspace(0, math.pi, 20_001, dtype=torch.float64)
    for row in params:
        density = factor.log_prob(row.expand(grid.numel(), 3), grid.unsqueeze(-1)).exp()
        # periodic smooth integrand: trapezoid is spectrally accurate; 1e-6 leaves room for the
        # von Mises normaliser (Bessel series in torch)
        assert abs(torch.trapezoid(density, grid).item() - 1) < 1e-6


def test_position_angle_sample_concentrates_on_point_estimate() -> None:
    factor = PositionAngleFactor("beta_rad")
    params = torch.tensor([0.3, -0.8, 20.0]).expand(5000, 3)  # kappa ~ 20
    estimate = factor.point_estimate(params[:1]).item()
    samples = factor.sample(params)[:, 0]
    # circular distance with period pi; sd of the doubled angle ~ 1/sqrt(20) ~ 0.22 -> 0.11 in beta
    distance = torch.remainder(samples - estimate + math.pi / 2, math.pi) - math.pi / 2
    assert distance.abs().median().item() < 0.1
    assert abs(distance.mean().item()) < 0.01  # symmetric: 5 sd of the mean of 5000 draws


@pytest.mark.parametrize(("threshold", "expected"), [(0.3, 3), (0.5, 2), (0.8, 1), (0.95, 0)])
def test_count_point_estimate_thresholds_tail_probabilities(
    threshold: float, expected: int
) -> None:
    factor = CountFactor(3)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])  # P(n > j) = 0.9, 0.7, 0.4; argmax would be 3
    logits = probs.log().view(1, 1, 1, 4)
    torch.testing.assert_close(factor.prob_at_least(logits)[0, 0, 0], torch.tensor([0.9, 0.7, 0.4]))
    assert factor.point_estimate(logits, threshold).item() == expected


def test_count_single_slot_threshold_and_sampling() -> None:
    factor = CountFactor(1)
    logit = torch.logit(torch.tensor(0.6)).view(1, 1, 1, 1)
    assert factor.point_estimate(logit, 0.5).item() == 1
    assert factor.point_estimate(logit, 0.7).item() == 0
    frequency = factor.sample(logit.expand(20_000, 1, 1, 1)).double().mean().item()
    assert abs(frequency - 0.6) < 0.02  # binomial sd 0.0035: about 6 sd


def test_count_sample_frequencies() -> None:
    factor = CountFactor(3)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    draws = factor.sample(probs.log().expand(20_000, 1, 1, 4))
    frequency = torch.bincount(draws.flatten(), minlength=4).double() / draws.numel()
    # binomial sd <= 0.0035 per bin; 0.02 is over 5 sd
    torch.testing.assert_close(frequency, probs.double(), atol=0.02, rtol=0)


def test_min_scale_is_a_floor() -> None:
    factor = NormalFactor("x", min_scale=0.05)
    params = torch.tensor([[0.0, -50.0]])  # softplus(-50) ~ 2e-22
    width = factor.quantile(params, 0.84) - factor.quantile(params, 0.16)
    # the 16-84 % range of a normal is 2 sd (1.9889 exactly)
    torch.testing.assert_close(width, torch.tensor([[0.05 * 1.9889]]), rtol=1e-3, atol=0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: NormalFactor("x", dim=0),
        lambda: NormalFactor("x", min_scale=-1),
        lambda: NormalFactor("x", gate="stars"),
        lambda: LogitNormalFactor("q", low=1.0, high=0.0),
        lambda: TruncatedNormalFactor("locs", low=0.5, high=0.5),
        lambda: CountFactor(0),
    ],
)
def test_bad_arguments_raise_config_error(build: Callable[[], object]) -> None:
    with pytest.raises(BlissConfigError):
        build()


def test_gate_error_lists_valid_gates() -> None:
    with pytest.raises(BlissConfigError, match="galaxy"):
        NormalFactor("x", gate="stars")


def test_truncated_normal_samples_follow_density() -> None:
    factor = TruncatedNormalFactor("locs")
    params = torch.tensor([0.4, -1.0]).expand(20_000, 2)
    samples = factor.sample(params)[:, 0].numpy()
    loc, scale = 1 / (1 + math.exp(-0.4)), math.log1p(math.exp(-1.0)) + factor.min_scale
    reference = stats.truncnorm(-loc / scale, (1 - loc) / scale, loc=loc, scale=scale)
    # KS statistic of 20000 draws from the right law exceeds 0.02 with probability < 1e-7
    assert stats.kstest(samples, reference.cdf).statistic < 0.02
    assert np.all((samples >= 0) & (samples <= 1))


def test_tile_location_summarises_the_untruncated_normal() -> None:
    factor = TileLocationFactor("locs", dim=2, low=-0.25, high=1.25)
    params = _params(factor, torch.float64)
    raw_loc, scale = _loc_scale(params, factor.min_scale)
    loc = -0.25 + 1.5 * torch.sigmoid(raw_loc)
    for q in (0.05, 0.5, 0.95):
        expected = torch.from_numpy(stats.norm.ppf(q, loc.numpy(), scale.numpy()))
        # normal_icdf is good to ~1e-7, as in the closed-form checks above
        torch.testing.assert_close(factor.quantile(params, q), expected, atol=1e-6, rtol=1e-6)
    # the point estimate is the truncated density's mode; likelihood and samples keep the tile
    mode = factor.point_estimate(params)
    density = factor.distribution(params)
    for step in (-1e-3, 1e-3):
        assert (density.log_prob((mode + step).clamp(-0.25, 1.25)) <= density.log_prob(mode)).all()
    torch.testing.assert_close(
        factor.log_prob(params, mode),
        TruncatedNormalFactor("locs", dim=2, low=-0.25, high=1.25).log_prob(params, mode),
    )


def test_tile_location_intervals_cover_sources_found_by_the_wrong_tile() -> None:
    # Sources uniform on a line of unit tiles, measured with Gaussian noise; a source is reported
    # by the tile its measurement falls in. With a flat prior the position's posterior is
    # N(measurement, sigma), whose centre always lies in the reporting tile: the tile-location
    # intervals are exact, the truncated ones miss every source across the border.
    generator = torch.Generator().manual_seed(3)
    n, sigma = 20_000, 0.3
    truth = 50 * torch.rand(n, generator=generator, dtype=torch.float64)
    measured = truth + sigma * torch.randn(n, generator=generator, dtype=torch.float64)
    tile = measured.floor()
    within = (measured - tile).clamp(1e-9, 1 - 1e-9)
    raw_scale = torch.log(torch.expm1(torch.tensor(sigma - 1e-3, dtype=torch.float64)))
    params = torch.stack([torch.logit(within), raw_scale.expand(n)], -1)
    coverage = {}
    for factor in (TileLocationFactor("locs"), TruncatedNormalFactor("locs")):
        low, high = (tile + factor.quantile(params, q)[:, 0] for q in (0.05, 0.95))
        coverage[type(factor).__name__] = ((truth >= low) & (truth <= high)).double().mean()
    # binomial s.e. of a 0.9 rate over 20000 draws: 0.0021; 0.01 is ~5 s.e.
    assert abs(coverage["TileLocationFactor"] - 0.9) < 0.01
    assert coverage["TruncatedNormalFactor"] < 0.85
