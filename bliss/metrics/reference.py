"""A catalog against a reference catalog (e.g. a survey pipeline's), per magnitude bin.

The reference is not ground truth, so the numbers are named for what they measure, in bins
``[lo, hi)`` of one band's AB magnitude:

* **completeness**: fraction of reference sources (binned by their reference magnitude) matched
  by the catalog (the ``recall`` of :func:`~bliss.metrics.detection.detection_metrics`);
* **purity**: fraction of the catalog's sources (binned by the catalog's own magnitude) that the
  reference also has (``precision``);
* **type agreement**: fraction of matched pairs (binned by reference magnitude) with the same
  star/galaxy call (:func:`~bliss.metrics.detection.classification_metrics`);
* **median Δmag**: median of catalog minus reference magnitude over those pairs
  (``mag_bias_median`` of :func:`~bliss.metrics.flux.flux_metrics`).

Matching is :func:`~bliss.metrics.matching.match_full_catalogs` (one-to-one, at most
``match_dist_px``). "Don't care" reference objects (e.g. saturated stars) take part in the
matching; then they and the sources matched to them are removed, so they count neither for nor
against the catalog. Rates with an empty denominator are NaN.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bliss.catalog import FullCatalog
from bliss.catalog.convert import nmgy_to_mag
from bliss.metrics.detection import _check_bins, classification_metrics, detection_metrics
from bliss.metrics.flux import flux_metrics
from bliss.metrics.matching import match_full_catalogs

__all__ = ["REFERENCE_BIN_KEYS", "ReferenceComparison", "compare_with_reference"]

#: the per-bin numbers, in table order
REFERENCE_BIN_KEYS = (
    "n_reference",
    "completeness",
    "n_detected",
    "purity",
    "n_matched",
    "type_agreement",
    "delta_mag_median",
)


@dataclass
class ReferenceComparison:
    """One catalog against the reference, "don't care" objects removed.

    Attributes:
        reference: the kept reference sources (one image).
        estimate: the kept sources of the catalog.
        matches: ``[(reference_idx, estimate_idx)]`` into the two kept catalogs.
        reference_kept: which input reference sources were kept. Shape ``n`` (bool).
        estimate_kept: which input catalog sources were kept. Shape ``k`` (bool).
        metrics: ``all`` (one row over ``[mag_bins[0], mag_bins[-1])``), ``per_bin`` (a row per
            bin: ``mag_lo``, ``mag_hi`` and :data:`REFERENCE_BIN_KEYS`), ``confusion`` (star/galaxy
            counts of the matches in ``all``), ``n_reference_dont_care`` and
            ``n_detected_dont_care`` (removed sources).
    """

    reference: FullCatalog
    estimate: FullCatalog
    matches: list[tuple[Tensor, Tensor]]
    reference_kept: np.ndarray
    estimate_kept: np.ndarray
    metrics: dict[str, Any]


def compare_with_reference(
    reference: FullCatalog,
    estimate: FullCatalog,
    dont_care: Tensor,
    *,
    band: int,
    match_dist_px: float,
    mag_bins: Sequence[float],
) -> ReferenceComparison:
    """Match a one-image catalog to a reference and summarise per magnitude bin.

    Args:
        reference: the reference catalog with ``fluxes`` (nmgy) and ``source_type``.
        estimate: the catalog to compare, same image.
        dont_care: reference sources that count for nothing. Shape ``n`` (bool).
        band: index of the band whose magnitudes are binned and compared.
        match_dist_px: largest distance of a match, pixels.
        mag_bins: increasing AB magnitude edges.

    Returns:
        The :class:`ReferenceComparison`.

    Raises:
        BlissValueError: ``mag_bins`` is not at least two increasing edges, or the catalogs
            cover different images.

    Example:
        >>> import torch
        >>> def catalog(rows, cols, fluxes):
        ...     return FullCatalog(16, 16, {
        ...         "n_sources": torch.tensor([len(rows)]),
        ...         "plocs": torch.tensor([list(zip(rows, cols))], dtype=torch.float32),
        ...         "fluxes": torch.tensor(fluxes, dtype=torch.float32).view(1, -1, 1),
        ...         "source_type": torch.zeros(1, len(rows), 1)})
        >>> reference = catalog([2.5, 8.5], [2.5, 8.5], [10.0, 10.0])  # two r = 20 stars
        >>> found = catalog([2.7, 12.5], [2.5, 3.5], [11.0, 1.0])  # one found, one spurious
        >>> result = compare_with_reference(reference, found, torch.tensor([False, False]),
        ...                                 band=0, match_dist_px=1.5, mag_bins=[19, 21, 23])
        >>> [(row["completeness"], row["purity"]) for row in result.metrics["per_bin"]]
        [(0.5, 1.0), (nan, 0.0)]
    """
    edges = _check_bins(mag_bins)
    ((ref_idx, est_idx),) = match_full_catalogs(reference, estimate, max_dist_px=match_dist_px)
    dont_care = dont_care.bool().cpu()
    n_ref, n_est = int(reference["n_sources"][0]), int(estimate["n_sources"][0])
    est_dropped = torch.zeros(n_est, dtype=torch.bool)
    est_dropped[est_idx[dont_care[ref_idx]]] = True
    keep_ref, keep_est = ~dont_care[:n_ref], ~est_dropped
    pair_kept = keep_ref[ref_idx]
    matches = [
        (
            (torch.cumsum(keep_ref.long(), 0) - 1)[ref_idx[pair_kept]],
            (torch.cumsum(keep_est.long(), 0) - 1)[est_idx[pair_kept]],
        )
    ]
    reference = reference.select(keep_ref.unsqueeze(0))
    estimate = estimate.select(keep_est.unsqueeze(0))
    per_bin = [
        _bin_row(reference, estimate, matches, band, lo, hi)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
    ]
    overall = _bin_row(reference, estimate, matches, band, edges[0], edges[-1])
    in_range = _pairs_in(reference, matches, band, edges[0], edges[-1])
    metrics = {
        "all": overall,
        "per_bin": per_bin,
        "confusion": classification_metrics(reference, estimate, in_range),
        "n_reference_dont_care": int((~keep_ref).sum()),
        "n_detected_dont_care": int(est_dropped.sum()),
    }
    return ReferenceComparison(
        reference, estimate, matches, keep_ref.numpy(), keep_est.numpy(), metrics
    )


def _pairs_in(
    reference: FullCatalog, matches: list[tuple[Tensor, Tensor]], band: int, lo: float, hi: float
) -> list[tuple[Tensor, Tensor]]:
    """The matched pairs whose reference magnitude is in ``[lo, hi)``."""
    ref_idx, est_idx = matches[0]
    mag = nmgy_to_mag(reference["fluxes"][0, ref_idx, band])
    inside = (mag >= lo) & (mag < hi)
    return [(ref_idx[inside], est_idx[inside])]


def _bin_row(
    reference: FullCatalog,
    estimate: FullCatalog,
    matches: list[tuple[Tensor, Tensor]],
    band: int,
    lo: float,
    hi: float,
) -> dict[str, float]:
    detection = detection_metrics(reference, estimate, matches, ref_band=band, mag_bins=[lo, hi])
    counts = {key: values[0] for key, values in detection["per_bin"].items()}
    flux = flux_metrics(reference, estimate, matches, band=band, mag_bins=[lo, hi])
    pairs = _pairs_in(reference, matches, band, lo, hi)
    n_matched = int(pairs[0][0].numel())
    types = classification_metrics(reference, estimate, pairs)
    nan = float("nan")
    return {
        "mag_lo": lo,
        "mag_hi": hi,
        "n_reference": counts["n_true"],
        "completeness": counts["recall"] if counts["n_true"] else nan,
        "n_detected": counts["n_est"],
        "purity": counts["precision"] if counts["n_est"] else nan,
        "n_matched": n_matched,
        "type_agreement": types["accuracy"] if n_matched else nan,
        "delta_mag_median": flux["per_bin"]["mag_bias_median"][0],
    }
