"""Weak-lensing shear metrics: multiplicative and additive bias, per-image error, map agreement.

Shear estimates are scored with the linear model of Heymans et al. (2006),
``g_est_j = (1 + m_j) g_true_j + c_j`` per component ``j`` (``g1``, ``g2``), fitted by ordinary
least squares. Inputs may be numpy arrays or torch tensors on any device; sums run in float64
on the CPU and results are plain floats. For the coverage of shear posterior intervals, flatten
the ``n 2`` truth and use :func:`bliss.metrics.flux.calibration_curve`.

References:
    Heymans et al. 2006, "The Shear Testing Programme - I", MNRAS 368, 1323.
    Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 11 (the jackknife).
"""

import math
import warnings

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from bliss.catalog.shapes import check_shape
from bliss.errors import BlissValueError, BlissWarning

__all__ = ["grouped_shear_bias", "map_correlation", "per_image_rmse", "shear_bias"]

ArrayLike = Tensor | np.ndarray


def shear_bias(estimate: ArrayLike, truth: ArrayLike) -> dict[str, float]:
    """Multiplicative and additive shear bias per component, with classical OLS errors.

    With ``s^2 = RSS / (n - 2)`` and ``Sxx = sum (truth_j - mean_j)^2``, the standard errors
    are ``sqrt(s^2 / Sxx)`` for ``m_j`` and ``sqrt(s^2 (1 / n + mean_j^2 / Sxx))`` for ``c_j``.
    They assume independent rows; use :func:`grouped_shear_bias` when rows share noise.

    Args:
        estimate: estimated shears ``(g1, g2)``. Shape: ``n 2``.
        truth: true shears. Shape: ``n 2``.

    Returns:
        ``m1, m2, c1, c2``, their errors ``m1_err, m2_err, c1_err, c2_err`` and ``n``.

    Raises:
        BlissShapeError: an input is not ``n 2`` or the two disagree on ``n``.
        BlissValueError: a value is not finite, ``n < 3``, or a truth component is constant.

    Example:
        >>> import torch
        >>> truth = torch.tensor([[-0.02, 0.01], [0.0, 0.03], [0.02, -0.01], [0.04, 0.0]])
        >>> bias = shear_bias(1.1 * truth + 0.001, truth)
        >>> round(bias["m1"], 6), round(bias["c2"], 6)
        (0.1, 0.001)
    """
    est, true = _shear_pairs(estimate, truth, for_fit=True)
    n_rows = est.shape[0]
    coefficients = _fit(est, true)
    slope, intercept = coefficients
    x_mean = true.mean(0)
    sxx = ((true - x_mean) ** 2).sum(0)
    residual_var = ((est - intercept - slope * true) ** 2).sum(0) / (n_rows - 2)
    errors = torch.sqrt(residual_var * torch.stack([1 / sxx, 1 / n_rows + x_mean**2 / sxx]))
    return _result(coefficients, errors, n_rows)


def grouped_shear_bias(
    estimate: ArrayLike, truth: ArrayLike, groups: ArrayLike
) -> dict[str, float]:
    """Shear bias as :func:`shear_bias`, with errors from a delete-one-group jackknife.

    Rows of one group (e.g. a shape-noise-cancelled quartet: one scene rotated by 0 and 90
    degrees, with ``+g`` and ``-g``) share noise, so OLS errors are too small. The estimates are
    the full OLS fit; refitting without group ``g`` gives ``theta_g``, and the error is
    ``sqrt((G - 1) / G * sum_g (theta_g - mean_g theta_g)^2)``. Groups must be independent of
    each other; with fewer than ~20 groups the error is itself noisy.

    Args:
        estimate: estimated shears ``(g1, g2)``. Shape: ``n 2``.
        truth: true shears. Shape: ``n 2``.
        groups: an integer group id per row (any values). Shape: ``n``.

    Returns:
        The keys of :func:`shear_bias`, with jackknife errors, and ``n_groups``.

    Raises:
        BlissShapeError: the shapes are not ``n 2``, ``n 2`` and ``n``.
        BlissValueError: as :func:`shear_bias`; or ``groups`` is not integer, has fewer than 3
            ids, or leaving one group out leaves a constant truth component.
    """
    est, true = _shear_pairs(estimate, truth, for_fit=True)
    labels, n_groups = _group_labels(groups, est.shape[0])
    # per-group sums, centred on the full-sample means so that the differences keep precision
    x_mean, y_mean = true.mean(0), est.mean(0)
    dx, dy = true - x_mean, est - y_mean
    terms = torch.stack([torch.ones_like(dx), dx, dy, dx * dx, dx * dy])
    per_group = torch.zeros(5, n_groups, 2, dtype=torch.float64).index_add_(1, labels, terms)
    count, sx, sy, sxx, sxy = per_group.sum(1, keepdim=True) - per_group
    spread = sxx - sx**2 / count
    if bool((spread <= 1e-12 * (dx * dx).sum(0)).any()):
        raise BlissValueError(
            "truth is constant once one group is left out, so the jackknife slope is undefined; "
            "check `groups` (one id per scene) or use scenes with different true shears."
        )
    slope = (sxy - sx * sy / count) / spread
    left_out = torch.stack([slope, (sy / count + y_mean) - slope * (sx / count + x_mean)])
    deviation = left_out - left_out.mean(1, keepdim=True)
    errors = torch.sqrt((n_groups - 1) / n_groups * (deviation**2).sum(1))
    return {**_result(_fit(est, true), errors, est.shape[0]), "n_groups": n_groups}


def per_image_rmse(estimate: ArrayLike, truth: ArrayLike) -> float:
    """Root mean square of ``estimate - truth`` over all images and both components.

    Args:
        estimate: estimated shears ``(g1, g2)``, one row per image. Shape: ``n 2``.
        truth: true shears. Shape: ``n 2``.

    Returns:
        The RMS error, in shear units.

    Raises:
        BlissShapeError: an input is not ``n 2`` or the two disagree on ``n``.
        BlissValueError: a value is not finite, or there are no rows.
    """
    est, true = _shear_pairs(estimate, truth, for_fit=False)
    return float(torch.sqrt(((est - true) ** 2).mean()))


def map_correlation(estimate_maps: ArrayLike, true_maps: ArrayLike) -> dict[str, float]:
    """Agreement of coarse estimated maps (convergence or one shear component) with the truth.

    Args:
        estimate_maps: one estimated coarse map per image. Shape: ``b h w``.
        true_maps: the true maps. Shape: ``b h w``.

    Returns:
        ``pearson_pooled`` (Pearson r over all tiles of all maps), ``pearson_per_image_mean``
        (mean of each map's r, skipping maps whose estimate or truth is constant), ``rmse`` and
        ``rmse_zero_map`` (RMSE of an all-zero estimate, the score to beat). An undefined
        correlation is ``nan``, with a :class:`~bliss.errors.BlissWarning`.

    Raises:
        BlissShapeError: an input is not ``b h w`` or the two shapes differ.
        BlissValueError: a value is not finite, or the maps are empty.
    """
    est = _as_float64("estimate_maps", estimate_maps)
    true = _as_float64("true_maps", true_maps)
    check_shape("true_maps", true, "b h w", check_shape("estimate_maps", est, "b h w"))
    if est.numel() == 0:
        raise BlissValueError(f"estimate_maps has shape {tuple(est.shape)}; expected tiles.")
    pooled = [rearrange(x, "b h w -> 1 (b h w)") for x in (est, true)]
    per_image = [rearrange(x, "b h w -> b (h w)") for x in (est, true)]
    return {
        "pearson_pooled": _pearson(*pooled, "all maps pooled"),
        "pearson_per_image_mean": _pearson(*per_image, "every map"),
        "rmse": float(torch.sqrt(((est - true) ** 2).mean())),
        "rmse_zero_map": float(torch.sqrt((true**2).mean())),
    }


def _as_float64(name: str, value: ArrayLike) -> Tensor:
    """``value`` as a float64 CPU tensor; refuses non-finite values."""
    tensor = torch.as_tensor(value).detach().to(device="cpu", dtype=torch.float64)
    n_bad = int((~torch.isfinite(tensor)).sum())
    if n_bad:
        raise BlissValueError(
            f"{name} has {n_bad} non-finite values (nan or inf) out of {tensor.numel()}; "
            "expected finite numbers. Drop or mask those rows first."
        )
    return tensor


def _shear_pairs(estimate: ArrayLike, truth: ArrayLike, for_fit: bool) -> tuple[Tensor, Tensor]:
    """Checked ``n 2`` float64 copies; a fit also needs ``n >= 3`` and a varying truth."""
    est, true = _as_float64("estimate", estimate), _as_float64("truth", truth)
    n_rows = check_shape("truth", true, "n 2", check_shape("estimate", est, "n 2"))["n"]
    if n_rows < (3 if for_fit else 1):
        raise BlissValueError(
            f"estimate and truth have {n_rows} rows; expected at least "
            + ("3 (slope, intercept and residual variance)." if for_fit else "1.")
        )
    constant = [f"g{j + 1}" for j in range(2) if bool(true[:, j].min() == true[:, j].max())]
    if for_fit and constant:
        raise BlissValueError(
            f"truth component(s) {constant} take a single value, so m is undefined; expected "
            "true shears that vary. Simulate several shear values."
        )
    return est, true


def _group_labels(groups: ArrayLike, n_rows: int) -> tuple[Tensor, int]:
    """Group ids as labels ``0 .. G - 1`` (shape ``n``), and ``G``."""
    ids = torch.as_tensor(groups).detach().cpu()
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise BlissValueError(
            f"groups has dtype {ids.dtype}; expected integer ids, one per row (e.g. the index "
            "of the scene shared by a quartet's four renders)."
        )
    check_shape("groups", ids, "n", {"n": n_rows})
    unique, labels = torch.unique(ids, return_inverse=True)
    if len(unique) < 3:
        raise BlissValueError(
            f"groups has {len(unique)} distinct ids; the jackknife needs at least 3 (~20 for a "
            "stable error). Pass more scenes."
        )
    return labels, len(unique)


def _fit(est: Tensor, true: Tensor) -> Tensor:
    """OLS slope and intercept of each column of ``est`` on that of ``true``. Shape: ``2 2``."""
    x_mean, y_mean = true.mean(0), est.mean(0)
    dx = true - x_mean
    slope = (dx * (est - y_mean)).sum(0) / (dx * dx).sum(0)
    return torch.stack([slope, y_mean - slope * x_mean])


def _result(coefficients: Tensor, errors: Tensor, n_rows: int) -> dict[str, float]:
    """``m1 m2 c1 c2`` and their errors, from ``(slope, intercept) x (g1, g2)`` tensors."""
    bias = torch.stack([coefficients[0] - 1, coefficients[1]])
    result = {
        f"{name}{j + 1}{suffix}": float(values[i, j])
        for suffix, values in (("", bias), ("_err", errors))
        for i, name in enumerate("mc")
        for j in range(2)
    }
    return {**result, "n": n_rows}


def _pearson(est: Tensor, true: Tensor, what: str) -> float:
    """Mean over rows (shape ``r k``) of Pearson r, skipping rows where either is constant."""
    varies = (est.amax(-1) > est.amin(-1)) & (true.amax(-1) > true.amin(-1))
    if not bool(varies.any()):
        warnings.warn(
            f"estimate or truth is constant for {what}; Pearson r is undefined, returning nan.",
            BlissWarning,
            stacklevel=3,
        )
        return math.nan
    dx = est[varies] - est[varies].mean(-1, keepdim=True)
    dy = true[varies] - true[varies].mean(-1, keepdim=True)
    r = (dx * dy).sum(-1) / torch.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
    return float(r.clamp(-1.0, 1.0).mean())
