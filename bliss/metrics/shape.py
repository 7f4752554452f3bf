"""Galaxy shape errors of matched galaxies.

Only pairs where the true source *and* the estimate are galaxies (``source_type > 0.5``) are
used: the shape parameters of a source estimated to be a star carry no meaning. Medians of empty
sets are ``nan``.
"""

import math

import torch
from torch import Tensor

from bliss.catalog import FullCatalog
from bliss.errors import BlissValueError
from bliss.metrics.matching import Matches, _check_matches, _paired_values

__all__ = ["SHAPE_KEYS", "circular_abs_diff", "shape_metrics"]

#: Shape keys compared by absolute error (unitless, except the ``_arcsec`` radii).
SHAPE_KEYS = ("disk_frac", "disk_q", "bulge_q", "disk_hlr_arcsec", "bulge_hlr_arcsec")


def circular_abs_diff(a: Tensor, b: Tensor, period: float = math.pi) -> Tensor:
    """Absolute difference of two angles on a circle of the given period.

    Args:
        a: first angles, radians.
        b: second angles, radians; broadcastable with ``a``.
        period: the period in radians; pi for a galaxy position angle, whose ellipse is the same
            after half a turn [default: pi].

    Returns:
        ``min(|a - b| mod period, period - |a - b| mod period)``, in ``[0, period / 2]``.

    Raises:
        BlissValueError: ``period`` is not positive.

    Example:
        >>> import math, torch
        >>> round(float(circular_abs_diff(torch.tensor(0.05), torch.tensor(math.pi - 0.05))), 6)
        0.1
    """
    if not period > 0:
        raise BlissValueError(f"period={period}; expected a positive angle in radians, e.g. pi.")
    wrapped = torch.remainder(a - b, period)
    return torch.minimum(wrapped, period - wrapped)


def shape_metrics(truth: FullCatalog, est: FullCatalog, matches: Matches) -> dict:
    """Median absolute shape errors over matched galaxies.

    Args:
        truth: the true catalog, with ``source_type`` (0 star, 1 galaxy) and shape keys.
        est: the estimated catalog, with ``source_type`` and shape keys.
        matches: one ``(true_idx, est_idx)`` pair per image, from
            :func:`~bliss.metrics.matching.match_full_catalogs`.

    Returns:
        ``n_galaxies`` (int, pairs used) and, for each key of :data:`SHAPE_KEYS` present in both
        catalogs, ``<key>_abs_err_median``; for ``beta_rad`` (position angle, period pi),
        ``beta_rad_abs_err_median`` is the median circular difference in radians. Keys missing
        from either catalog are left out; medians of no galaxies are ``nan``.

    Raises:
        BlissValueError: ``source_type`` is missing, or the matches do not fit the catalogs.
    """
    _check_matches(truth, est, matches)
    for name, cat in (("truth", truth), ("est", est)):
        if "source_type" not in cat:
            raise BlissValueError(
                f"{name} has keys {cat.keys()}; `source_type` (0 star, 1 galaxy) is needed to "
                "select galaxies. Add it to the catalog."
            )
    true_type, est_type = _paired_values(truth, est, matches, "source_type")
    both_galaxy = (true_type[:, 0] > 0.5) & (est_type[:, 0].to(true_type.device) > 0.5)
    result: dict = {"n_galaxies": int(both_galaxy.sum())}
    for key in (*SHAPE_KEYS, "beta_rad"):
        if key not in truth or key not in est:
            continue
        true_value, est_value = _paired_values(truth, est, matches, key)
        true_value = true_value[both_galaxy, 0].double()
        est_value = est_value[both_galaxy.to(est_value.device), 0].double().to(true_value.device)
        if key == "beta_rad":
            error = circular_abs_diff(est_value, true_value)
        else:
            error = (est_value - true_value).abs()
        result[f"{key}_abs_err_median"] = (
            float(torch.quantile(error, 0.5)) if error.numel() else math.nan
        )
    return result
