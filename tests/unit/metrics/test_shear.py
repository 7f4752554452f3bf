"""Shear bias, its errors and map agreement on synthetic estimators whose answer is known."""

import math

import numpy as np
import pytest
import torch

from bliss.errors import BlissShapeError, BlissValueError, BlissWarning
from bliss.metrics.shear import grouped_shear_bias, map_correlation, per_image_rmse, shear_bias

M_TRUE = 0.03
C_TRUE = torch.tensor([2e-3, -1e-3], dtype=torch.float64)
KEYS = ("m1", "m2", "c1", "c2")


def _truth(n: int, gen: torch.Generator) -> torch.Tensor:
    """True shears uniform in [-0.05, 0.05]. Shape: ``n 2``."""
    return 0.1 * torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.05


def _noise(shape: tuple[int, ...], sigma: float, gen: torch.Generator) -> torch.Tensor:
    return sigma * torch.randn(*shape, generator=gen, dtype=torch.float64)


def _biased(truth: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return (1 + M_TRUE) * truth + C_TRUE + noise


def _expected(key: str) -> float:
    return M_TRUE if key.startswith("m") else float(C_TRUE[int(key[1]) - 1])


def test_noise_free_line_is_recovered_exactly():
    truth = _truth(50, torch.Generator().manual_seed(0))
    bias = shear_bias(_biased(truth, 0.0).numpy(), truth)  # numpy and torch mix
    for key in KEYS:
        assert bias[key] == pytest.approx(_expected(key), abs=1e-12)
        assert bias[f"{key}_err"] < 1e-12
    assert bias["n"] == 50


def test_known_bias_is_recovered_within_three_standard_errors():
    gen = torch.Generator().manual_seed(1)
    truth = _truth(4000, gen)
    bias = shear_bias(_biased(truth, _noise((4000, 2), 0.01, gen)), truth)
    # a correct estimator with correct errors misses 3 sigma with probability 0.27 % per key
    for key in KEYS:
        assert abs(bias[key] - _expected(key)) < 3 * bias[f"{key}_err"], (key, bias)


def test_ols_errors_match_numpy_polyfit():
    gen = torch.Generator().manual_seed(2)
    truth = _truth(300, gen) + 0.02  # an off-centre truth makes the intercept error differ
    estimate = _biased(truth, _noise((300, 2), 0.01, gen))
    bias = shear_bias(estimate, truth)
    for j in range(2):
        x, y = truth[:, j].numpy(), estimate[:, j].numpy()
        coef, cov = np.polyfit(x, y, 1, cov="unscaled")
        scale = np.sum((y - np.polyval(coef, x)) ** 2) / (300 - 2)
        assert bias[f"m{j + 1}"] == pytest.approx(coef[0] - 1, rel=1e-9)
        assert bias[f"m{j + 1}_err"] == pytest.approx(math.sqrt(scale * cov[0, 0]), rel=1e-9)
        assert bias[f"c{j + 1}_err"] == pytest.approx(math.sqrt(scale * cov[1, 1]), rel=1e-9)


def _scatter_and_reported(fits: list[dict], key: str) -> tuple[float, float]:
    """Standard deviation of ``key`` over repeats, and the mean reported ``key_err``."""
    values = np.array([fit[key] for fit in fits])
    return float(values.std(ddof=1)), float(np.mean([fit[f"{key}_err"] for fit in fits]))


def test_ols_errors_match_the_scatter_over_repeats():
    gen = torch.Generator().manual_seed(3)
    truth = _truth(500, gen)
    fits = [shear_bias(_biased(truth, _noise((500, 2), 0.01, gen)), truth) for _ in range(200)]
    # the sample standard deviation of 200 draws has a relative standard error of
    # 1 / sqrt(2 * 199) = 5 %, so 15 % is 3 of them
    for key in KEYS:
        scatter, reported = _scatter_and_reported(fits, key)
        assert reported == pytest.approx(scatter, rel=0.15), key


def test_grouped_errors_follow_shared_noise_where_ols_errors_do_not():
    # 100 scenes of 4 renders each: the renders share the scene's true shear and a big common
    # noise term (sigma 0.02) on top of their own noise (sigma 0.01)
    gen = torch.Generator().manual_seed(4)
    n_groups, per_group = 100, 4
    groups = torch.arange(n_groups).repeat_interleave(per_group)
    truth = _truth(n_groups, gen)[groups]
    naive, grouped = [], []
    for _ in range(200):
        common = _noise((n_groups, 2), 0.02, gen)[groups]
        estimate = _biased(truth, common + _noise((n_groups * per_group, 2), 0.01, gen))
        naive.append(shear_bias(estimate, truth))
        grouped.append(grouped_shear_bias(estimate, truth, groups.numpy()))
    assert grouped[0]["n_groups"] == n_groups and grouped[0]["n"] == n_groups * per_group
    for key in KEYS:
        scatter, reported = _scatter_and_reported(grouped, key)
        # 5 % sampling error of the scatter (200 repeats) plus the jackknife's own small
        # bias at 100 groups: 20 % is 4 sampling errors
        assert reported == pytest.approx(scatter, rel=0.2), key
        # OLS treats the 4 renders as independent: its error is too small by
        # sqrt((0.02^2 + 0.01^2) / (4 * 0.02^2 + 0.01^2)) = 0.54
        _, naive_reported = _scatter_and_reported(naive, key)
        assert naive_reported < 0.7 * scatter, key
    for key in KEYS:  # same point estimates, only the errors differ
        assert grouped[0][key] == naive[0][key]


def test_jackknife_matches_an_explicit_delete_one_group_loop():
    gen = torch.Generator().manual_seed(5)
    truth = _truth(120, gen)
    estimate = _biased(truth, _noise((120, 2), 0.01, gen))
    groups = 7 * torch.randint(0, 17, (120,), generator=gen)  # unequal, non-contiguous ids
    bias = grouped_shear_bias(estimate, truth, groups)
    ids = groups.unique()
    left_out = np.array(
        [
            [np.polyfit(truth[groups != g, j], estimate[groups != g, j], 1) for j in range(2)]
            for g in ids
        ]
    )  # G 2 (slope, intercept)
    errors = np.sqrt((len(ids) - 1) / len(ids) * ((left_out - left_out.mean(0)) ** 2).sum(0))
    assert bias["n_groups"] == len(ids)
    for j in range(2):
        assert bias[f"m{j + 1}_err"] == pytest.approx(errors[j, 0], rel=1e-9)
        assert bias[f"c{j + 1}_err"] == pytest.approx(errors[j, 1], rel=1e-9)


def test_per_image_rmse():
    truth = torch.zeros(3, 2)
    estimate = torch.tensor([[0.0, 0.3], [0.0, -0.3], [0.3, 0.0]])
    # squared errors 0.09, 0.09, 0.09 over 6 values
    assert per_image_rmse(estimate, truth) == pytest.approx(math.sqrt(0.27 / 6))


def _maps(gen: torch.Generator, b: int = 8, side: int = 32) -> torch.Tensor:
    return torch.randn(b, side, side, generator=gen, dtype=torch.float64)


def test_identical_maps_correlate_perfectly():
    truth = _maps(torch.Generator().manual_seed(6))
    scores = map_correlation(truth, truth)
    assert scores["pearson_pooled"] == pytest.approx(1.0, abs=1e-12)
    assert scores["pearson_per_image_mean"] == pytest.approx(1.0, abs=1e-12)
    assert scores["rmse"] == 0.0


def test_noise_of_equal_variance_halves_the_squared_correlation():
    gen = torch.Generator().manual_seed(7)
    truth, noise = _maps(gen), _maps(gen)
    scores = map_correlation(truth + noise, truth)
    # the standard error of r is (1 - r^2) / sqrt(N): 0.5 / sqrt(8192) = 0.0055 pooled and,
    # for the mean of 8 maps of 1024 tiles, 0.5 / sqrt(1024) / sqrt(8) = 0.0055; allow 4 of them
    assert scores["pearson_pooled"] == pytest.approx(1 / math.sqrt(2), abs=0.022)
    assert scores["pearson_per_image_mean"] == pytest.approx(1 / math.sqrt(2), abs=0.022)
    assert scores["rmse"] == pytest.approx(float(noise.pow(2).mean().sqrt()), rel=1e-12)
    assert scores["rmse_zero_map"] == pytest.approx(float(np.sqrt(np.mean(truth.numpy() ** 2))))


def test_constant_maps_are_skipped_per_image_and_nan_when_all_are():
    gen = torch.Generator().manual_seed(8)
    truth = _maps(gen, b=3)
    estimate = truth + _maps(gen, b=3)
    truth[1] = 0.5  # r undefined for this map
    kept = [map_correlation(estimate[i : i + 1], truth[i : i + 1]) for i in (0, 2)]
    expected = np.mean([score["pearson_per_image_mean"] for score in kept])
    scores = map_correlation(estimate, truth)
    assert scores["pearson_per_image_mean"] == pytest.approx(expected, rel=1e-12)
    with pytest.warns(BlissWarning, match="constant"):
        flat = map_correlation(torch.zeros(2, 4, 4), truth[:2, :4, :4])
    assert math.isnan(flat["pearson_pooled"]) and math.isnan(flat["pearson_per_image_mean"])


GOOD = torch.linspace(-0.05, 0.05, 12, dtype=torch.float64).reshape(6, 2)


@pytest.mark.parametrize(
    ("estimate", "truth", "error", "match"),
    [
        (torch.zeros(6, 3), GOOD, BlissShapeError, r"estimate has shape \(6, 3\)"),
        (GOOD, GOOD[:, 0], BlissShapeError, "truth has shape"),
        (GOOD, GOOD[:5], BlissShapeError, "truth has shape"),
        (GOOD.clone().fill_diagonal_(math.nan), GOOD, BlissValueError, "estimate has 2 non-fin"),
        (GOOD, GOOD.clone().fill_diagonal_(math.inf), BlissValueError, "truth has 2 non-finite"),
        (GOOD[:2], GOOD[:2], BlissValueError, "estimate and truth have 2 rows"),
        (GOOD, GOOD * torch.tensor([1.0, 0.0]), BlissValueError, r"truth component\(s\) \['g2'\]"),
    ],
)
def test_bad_shear_inputs_are_refused_by_name(estimate, truth, error, match):
    with pytest.raises(error, match=match):
        shear_bias(estimate, truth)
    with pytest.raises(error, match=match):
        grouped_shear_bias(estimate, truth, torch.arange(len(estimate)))


def test_bad_groups_and_maps_are_refused_by_name():
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(BlissValueError, match="groups has dtype torch.float"):
        grouped_shear_bias(GOOD, GOOD, groups.double())
    with pytest.raises(BlissShapeError, match="groups has shape"):
        grouped_shear_bias(GOOD, GOOD, groups[:5])
    with pytest.raises(BlissValueError, match="groups has 2 distinct ids"):
        grouped_shear_bias(GOOD, GOOD, groups.clamp(max=1))
    one_scene_varies = GOOD.clone()
    one_scene_varies[2:, 0] = 0.01  # without group 0, g1 is constant
    with pytest.raises(BlissValueError, match="truth is constant once one group is left out"):
        grouped_shear_bias(one_scene_varies, one_scene_varies, groups)
    with pytest.raises(BlissValueError, match="estimate and truth have 0 rows"):
        per_image_rmse(torch.zeros(0, 2), torch.zeros(0, 2))
    with pytest.raises(BlissShapeError, match="true_maps has shape"):
        map_correlation(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    bad_map = torch.zeros(1, 2, 2)
    bad_map[0, 1, 1] = math.nan
    with pytest.raises(BlissValueError, match="estimate_maps has 1 non-finite"):
        map_correlation(bad_map, torch.zeros(1, 2, 2))
