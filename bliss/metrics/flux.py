"""Flux errors of matched sources and calibration of posterior intervals.

Medians of empty sets are reported as ``nan`` (``json.dump`` writes it as ``NaN``), never as 0,
which would read as a perfect score.
"""

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from bliss.catalog import FullCatalog
from bliss.catalog.convert import nmgy_to_mag
from bliss.errors import BlissShapeError, BlissValueError, BlissWarning
from bliss.metrics.detection import _bin_index, _check_bins
from bliss.metrics.matching import Matches, _check_band, _check_matches, _paired_values

__all__ = ["calibration_curve", "flux_metrics", "interval_coverage"]


def flux_metrics(
    truth: FullCatalog,
    est: FullCatalog,
    matches: Matches,
    band: int = 0,
    mag_bins: Sequence[float] | None = None,
) -> dict:
    """Magnitude errors of the matched sources in one band.

    Args:
        truth: the true catalog, with ``fluxes`` (nanomaggies, ``b n c``).
        est: the estimated catalog, with ``fluxes`` (nanomaggies, ``b n c``).
        matches: one ``(true_idx, est_idx)`` pair per image, from
            :func:`~bliss.metrics.matching.match_full_catalogs`.
        band: band whose magnitudes are compared [default: 0].
        mag_bins: increasing AB magnitude edges; pairs are binned by their *true* magnitude in
            ``[mag_bins[j], mag_bins[j+1])``. ``None`` skips the binned metrics [default: None].

    Returns:
        ``n_matched`` (int), ``mag_abs_err_median`` (median of ``|est_mag - true_mag|``) and
        ``mag_bias_median`` (median of ``est_mag - true_mag``; positive means estimates are too
        faint), in AB magnitudes; with ``mag_bins`` also ``mag_bins`` and ``per_bin`` (lists
        ``n_matched``, ``mag_abs_err_median``, ``mag_bias_median``). Empty sets give ``nan``.

    Raises:
        BlissValueError: the matches do not fit the catalogs, ``fluxes`` or ``band`` is
            missing, or ``mag_bins`` is not increasing.
    """
    _check_matches(truth, est, matches)
    for name, cat in (("truth", truth), ("est", est)):
        _check_band(name, cat, band)
    true_mag, error = _paired_dmag(truth, est, matches, band)
    result: dict = {"n_matched": int(error.numel()), **_summarise(error)}
    if mag_bins is None:
        return result
    edges = _check_bins(mag_bins)
    bins = _bin_index(true_mag, edges)
    per_bin: dict[str, list] = {"n_matched": [], "mag_abs_err_median": [], "mag_bias_median": []}
    for j in range(len(edges) - 1):
        in_bin = error[bins == j]
        per_bin["n_matched"].append(int(in_bin.numel()))
        for key, value in _summarise(in_bin).items():
            per_bin[key].append(value)
    result["mag_bins"] = edges
    result["per_bin"] = per_bin
    return result


def interval_coverage(truth_values: Tensor, lower: Tensor, upper: Tensor) -> float:
    """Fraction of true values inside their interval ``[lower, upper]`` (both ends included).

    Args:
        truth_values: the true values, any shape.
        lower: lower interval ends, same shape as ``truth_values``.
        upper: upper interval ends, same shape as ``truth_values``.

    Returns:
        The observed coverage in [0, 1]; ``nan`` with a :class:`BlissWarning` when there are no
        values.

    Raises:
        BlissShapeError: the three shapes differ.
        BlissValueError: some ``lower > upper`` (the ends were probably swapped).

    Example:
        >>> import torch
        >>> interval_coverage(torch.tensor([0.0, 2.0]), torch.tensor([-1.0, -1.0]),
        ...                   torch.tensor([1.0, 1.0]))
        0.5
    """
    for name, value in (("lower", lower), ("upper", upper)):
        if value.shape != truth_values.shape:
            raise BlissShapeError(
                f"{name} has shape {tuple(value.shape)} but truth_values has "
                f"{tuple(truth_values.shape)}; expected one interval per true value."
            )
    if bool((lower > upper).any()):
        n_bad = int((lower > upper).sum())
        raise BlissValueError(
            f"{n_bad} intervals have lower > upper; expected lower <= upper. Check the argument "
            "order (truth_values, lower, upper)."
        )
    if truth_values.numel() == 0:
        warnings.warn(
            "interval_coverage got no values; returning nan. Pass at least one true value.",
            BlissWarning,
            stacklevel=2,
        )
        return math.nan
    inside = (truth_values >= lower) & (truth_values <= upper)
    return float(inside.double().mean())


def calibration_curve(
    truth_values: Tensor,
    quantile_fn: Callable[[Tensor], Tensor],
    levels: Sequence[float],
) -> list[float]:
    """Observed coverage of central posterior intervals at several nominal levels.

    For each nominal level ``a`` the central interval is
    ``[quantile_fn((1 - a) / 2), quantile_fn((1 + a) / 2)]``. A calibrated posterior has
    observed coverage close to ``a`` for every ``a``; coverage below the diagonal means
    over-confident intervals, above it under-confident ones.

    Args:
        truth_values: the true values, one per source. Shape: ``s``.
        quantile_fn: maps probabilities of shape ``q`` to the per-source posterior quantiles at
            those probabilities, shape ``q s``. For a Gaussian posterior with means ``mu`` and
            scales ``sigma`` (shape ``s``):
            ``lambda p: torch.distributions.Normal(mu, sigma).icdf(p[:, None])``.
        levels: nominal central-interval levels, each strictly between 0 and 1, e.g.
            ``[0.1, 0.2, ..., 0.9]``.

    Returns:
        Observed coverage per level (list of floats, same order as ``levels``).

    Raises:
        BlissValueError: a level is not in (0, 1).
        BlissShapeError: ``truth_values`` is not 1-d, or ``quantile_fn`` returns another shape
            than ``q s``.

    Example:
        >>> import torch
        >>> truth = torch.tensor([-2.0, -0.1, 0.1, 2.0])
        >>> posterior = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
        >>> calibration_curve(truth, lambda p: posterior.icdf(p[:, None]), [0.5, 0.99])
        [0.5, 1.0]
    """
    if truth_values.ndim != 1:
        raise BlissShapeError(
            f"truth_values has shape {tuple(truth_values.shape)}; expected `s` (1-d, one value "
            "per source). Flatten it first."
        )
    nominal = [float(level) for level in levels]
    if not nominal or any(not 0.0 < level < 1.0 for level in nominal):
        raise BlissValueError(
            f"levels={nominal}; expected nominal central-interval levels strictly between 0 "
            "and 1, e.g. [0.1, 0.5, 0.9]."
        )
    nominal_t = torch.tensor(nominal, dtype=torch.float64)
    probs = torch.cat([(1 - nominal_t) / 2, (1 + nominal_t) / 2]).to(truth_values.dtype)
    quantiles = quantile_fn(probs.to(truth_values.device))
    expected = (len(probs), truth_values.shape[0])
    if tuple(quantiles.shape) != expected:
        raise BlissShapeError(
            f"quantile_fn returned shape {tuple(quantiles.shape)} for {len(probs)} probabilities "
            f"and {truth_values.shape[0]} sources; expected `q s` = {expected}. Broadcast the "
            "probabilities along a new first dimension."
        )
    lower, upper = quantiles[: len(nominal)], quantiles[len(nominal) :]
    return [interval_coverage(truth_values, lower[j], upper[j]) for j in range(len(nominal))]


def _paired_dmag(
    truth: FullCatalog, est: FullCatalog, matches: Matches, band: int
) -> tuple[Tensor, Tensor]:
    """True magnitudes and ``est - true`` magnitudes of the matched pairs in ``band``. ``p`` each."""
    true_flux, est_flux = _paired_values(truth, est, matches, "fluxes")
    true_mag = nmgy_to_mag(true_flux[:, band].double())
    return true_mag, nmgy_to_mag(est_flux[:, band].double()).to(true_mag.device) - true_mag


def _summarise(error: Tensor) -> dict[str, float]:
    """Median absolute and median signed error (``nan`` when empty)."""
    # nanquantile interpolates between the two middle values (torch.median does not) and skips
    # the nan of two non-positive fluxes (inf - inf)
    if error.isnan().all():
        return {"mag_abs_err_median": math.nan, "mag_bias_median": math.nan}
    return {
        "mag_abs_err_median": float(torch.nanquantile(error.abs(), 0.5)),
        "mag_bias_median": float(torch.nanquantile(error, 0.5)),
    }
