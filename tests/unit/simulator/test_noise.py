"""Noise: the exact Poisson sampler against the Poisson law, Gaussian statistics, seeding, shapes."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from bliss.errors import BlissShapeError, BlissValueError
from bliss.simulator.noise import NoiseModel, _sky_counts, _small_poisson, add_sky_and_noise
from bliss.simulator.torch_render import add_sky_and_noise_torch


def _chi2_pvalue(counts: np.ndarray, mean: float) -> float:
    """Pearson chi-square p-value of integer draws against Poisson(mean), tails pooled."""
    low = int(stats.poisson.ppf(1e-4, mean))
    high = max(int(stats.poisson.isf(1e-4, mean)), low + 1)
    observed = np.bincount(np.clip(counts.astype(np.int64), low, high) - low)
    observed = np.pad(observed, (0, high - low + 1 - len(observed)))
    expected = stats.poisson.pmf(np.arange(low, high + 1), mean)
    expected[0] = stats.poisson.cdf(low, mean)
    expected[-1] = stats.poisson.sf(high - 1, mean)
    return float(stats.chisquare(observed, expected * len(counts)).pvalue)


@pytest.mark.parametrize("mean", [0.02, 0.7, 3.0, 40.0, 620.0, 2.5e5])
def test_sky_counts_follow_the_poisson_law(mean):
    counts = np.empty(400_001, dtype=np.float32)  # odd: one 64-bit draw is split in halves
    _sky_counts(mean, np.random.default_rng(3), counts)
    assert np.array_equal(counts, np.round(counts))
    assert _chi2_pvalue(counts, mean) > 1e-3
    # the two 32-bit halves of each draw give independent counts
    half = len(counts) // 2
    assert abs(np.corrcoef(counts[:half], counts[half : 2 * half])[0, 1]) < 5 / math.sqrt(half)


def test_sky_counts_work_with_any_bit_generator():
    counts = np.empty(200_000, dtype=np.float32)  # MT19937 makes 32 bits per step, not 64
    _sky_counts(254.0, np.random.Generator(np.random.MT19937(3)), counts)
    assert _chi2_pvalue(counts, 254.0) > 1e-3


@pytest.mark.parametrize("mean", [1e-4, 0.05, 0.5, 0.999])
def test_small_means_follow_the_poisson_law(mean):
    counts = np.zeros(400_000, dtype=np.float32)
    drawn, above_zero = _small_poisson(np.full(len(counts), mean), np.random.default_rng(4))
    counts[drawn] = above_zero
    assert _chi2_pvalue(counts, mean) > 1e-3


def test_pixels_with_light_have_poisson_counts_of_sky_plus_light():
    # per pixel group: no light, faint light, light > 1 electron, negative light (ringing)
    light = np.concatenate([np.zeros(4096), np.full(4096, 0.3), np.full(4096, 25.0)])
    light = np.concatenate([light, np.full(4096, -3.0)]).reshape(1, 128, 128)
    rng = np.random.default_rng(5)
    draws = np.stack(
        [add_sky_and_noise(light, np.array([10.0]), "poisson", rng) for _ in range(25)]
    )
    assert draws.dtype == np.float32
    groups = draws.reshape(-1, 4, 4096).transpose(1, 0, 2).reshape(4, -1)
    for values, mean in zip(groups, [10.0, 10.3, 35.0, 7.0], strict=True):
        assert _chi2_pvalue(values, mean) > 1e-3


def test_sky_below_zero_light_clips_the_mean_at_zero():
    light = np.full((1, 4, 4), -50.0)
    counts = add_sky_and_noise(light, np.array([20.0]), "poisson", np.random.default_rng(0))
    assert not counts.any()


def test_gaussian_noise_has_mean_and_variance_of_the_counts():
    light = np.zeros((2, 64, 128))
    light[:, :, 64:] = 300.0
    sky = np.array([[50.0, 500.0], [50.0, 500.0]])
    rng = np.random.default_rng(6)
    noisy = add_sky_and_noise(np.stack([light, light]), sky, NoiseModel.GAUSSIAN, rng)
    assert noisy.shape == (2, 2, 64, 128) and noisy.dtype == np.float32
    for band in range(2):
        for side, source in ((slice(None, 64), 0.0), (slice(64, None), 300.0)):
            expected = sky[0, band] + source
            pixels = noisy[:, band, :, side].astype(np.float64).ravel()
            n = pixels.size
            assert pixels.mean() == pytest.approx(expected, abs=5 * math.sqrt(expected / n))
            assert pixels.var() == pytest.approx(expected, rel=5 * math.sqrt(2 / n))


@pytest.mark.parametrize("noise", ["poisson", "gaussian", "none"])
def test_noise_is_reproducible_from_the_seed(noise):
    light = np.random.default_rng(0).exponential(2.0, (3, 2, 16, 16)) * (np.arange(16) > 8)
    sky = np.full((3, 2), 80.0)
    first = add_sky_and_noise(light, sky, noise, np.random.default_rng(1))
    again = add_sky_and_noise(light, sky, noise, np.random.default_rng(1))
    other = add_sky_and_noise(light, sky, noise, np.random.default_rng(2))
    assert np.array_equal(first, again)
    assert np.array_equal(first, other) == (noise == "none")
    images = torch.from_numpy(light).float()
    torch_first = add_sky_and_noise_torch(
        images, torch.from_numpy(sky), noise, torch.Generator().manual_seed(1)
    )
    torch_again = add_sky_and_noise_torch(
        images, torch.from_numpy(sky), noise, torch.Generator().manual_seed(1)
    )
    assert torch.equal(torch_first, torch_again)


@pytest.mark.parametrize("noise", ["poisson", "gaussian", "none"])
def test_noise_drawn_in_place_equals_noise_into_a_new_array(noise):
    """Drawing into the light's own memory must read every light value before overwriting it."""
    rng = np.random.default_rng(0)
    light = (rng.exponential(3.0, (2, 3, 16, 16)) * (rng.random((2, 3, 16, 16)) < 0.5)).astype(
        np.float32
    )
    light[0, 0, :2] = -0.5  # ringing below zero takes numpy's sampler
    sky = np.full((2, 3), 40.0)
    fresh = add_sky_and_noise(light, sky, noise, np.random.default_rng(5))
    buffer = light.copy()
    inplace = add_sky_and_noise(buffer, sky, noise, np.random.default_rng(5), out=buffer)
    assert inplace is buffer
    assert np.array_equal(fresh, inplace)
    images = torch.from_numpy(light)
    expected = add_sky_and_noise_torch(
        images, torch.from_numpy(sky), noise, torch.Generator().manual_seed(2)
    )
    canvas = images.clone()
    drawn = add_sky_and_noise_torch(
        canvas, torch.from_numpy(sky), noise, torch.Generator().manual_seed(2), inplace=True
    )
    assert drawn is canvas
    assert torch.equal(expected, drawn)


def test_noise_out_must_be_float32_like_the_image():
    with pytest.raises(BlissValueError, match="out is float64"):
        add_sky_and_noise(
            np.zeros((2, 4, 4)),
            np.ones(2),
            "poisson",
            np.random.default_rng(0),
            out=np.zeros((2, 4, 4)),
        )


def test_sky_must_match_the_image_bands():
    with pytest.raises(BlissShapeError, match="sky_electrons"):
        add_sky_and_noise(np.zeros((3, 8, 8)), np.ones(2), "poisson", np.random.default_rng(0))
    with pytest.raises(BlissShapeError, match="image"):
        add_sky_and_noise(np.zeros((8, 8)), np.ones(1), "poisson", np.random.default_rng(0))
