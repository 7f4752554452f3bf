"""Piecewise-linear interpolation as a weight matrix, for separable interpolation on grids.

Bilinear interpolation of a ``gh x gw`` grid at every pixel of an ``h x w`` image is
``W_rows @ grid @ W_cols.T``: two small matrix products instead of ``h w`` lookups (the SDSS sky
model, PSF FWHM maps).
"""

import numpy as np

__all__ = ["linear_weights"]


def linear_weights(knots: np.ndarray, points: np.ndarray, *, clamp: bool = False) -> np.ndarray:
    """Weights of piecewise-linear interpolation from values at ``knots`` to ``points``.

    Args:
        knots: increasing positions of the known values. Shape ``k``.
        points: where to interpolate. Shape ``n``.
        clamp: points beyond the outermost knots take the end values (as
            ``ndimage.map_coordinates(order=1, mode="nearest")``); otherwise the outermost
            intervals are extrapolated linearly.

    Returns:
        Row ``i`` holds the weights of the knots' values at ``points[i]``. Shape ``n k``.
    """
    knots = np.asarray(knots, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    weights = np.zeros((len(points), len(knots)))
    if len(knots) == 1:
        weights[:, 0] = 1.0
        return weights
    if clamp:
        points = np.clip(points, knots[0], knots[-1])
    left = np.clip(np.searchsorted(knots, points, side="right") - 1, 0, len(knots) - 2)
    t = (points - knots[left]) / (knots[left + 1] - knots[left])
    weights[np.arange(len(points)), left] = 1.0 - t
    weights[np.arange(len(points)), left + 1] = t
    return weights
