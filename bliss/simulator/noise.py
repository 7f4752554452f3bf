"""Sky and detector noise, in electrons."""

from enum import StrEnum

import numpy as np

__all__ = ["NoiseModel", "add_sky_and_noise"]


class NoiseModel(StrEnum):
    """How pixel noise is drawn: exact Poisson, its Gaussian approximation, or none."""

    POISSON = "poisson"
    GAUSSIAN = "gaussian"
    NONE = "none"


def add_sky_and_noise(
    image: np.ndarray, sky_electrons: np.ndarray, noise: NoiseModel, rng: np.random.Generator
) -> np.ndarray:
    """Add a flat sky per band and draw the observed counts.

    Args:
        image: noise-free source light, electrons. Shape: ``c h w``.
        sky_electrons: sky level per band, electrons per pixel. Shape: ``c``.
        noise: the noise model.
        rng: random stream (seeded by the caller).

    Returns:
        The observed image in electrons (float32), shape ``c h w``.
    """
    expected = image + sky_electrons[:, None, None]
    np.maximum(expected, 0.0, out=expected)
    if noise == NoiseModel.POISSON:
        return rng.poisson(expected).astype(np.float32)
    if noise == NoiseModel.GAUSSIAN:
        return (expected + np.sqrt(expected) * rng.standard_normal(expected.shape)).astype(
            np.float32
        )
    return expected.astype(np.float32)
