"""Detection and star/galaxy classification metrics from matched catalogs.

Binning convention: a magnitude bin ``[lo, hi)`` in the reference band holds

* for **recall**, the true sources whose *true* magnitude is in the bin (the fraction of them
  that is matched), because recall asks "of what is really there, what did we find?";
* for **precision**, the estimated sources whose *estimated* magnitude is in the bin (the
  fraction of them that is matched), because precision asks "of what we reported, what is
  real?" and a spurious detection has no true magnitude.

The per-bin F1 combines those two numbers, so it mixes two slightly different populations when
magnitude errors move sources across bin edges. Ratios with an empty denominator are reported as
0.0 so that the results stay plain JSON numbers; the ``n_*`` counts say when that happened.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from bliss.catalog import FullCatalog
from bliss.catalog.convert import nmgy_to_mag
from bliss.errors import BlissValueError
from bliss.metrics.matching import (
    Matches,
    _check_band,
    _check_same_images,
    _matched_masks,
    _paired_values,
)

__all__ = ["classification_metrics", "compare_counts", "detection_metrics"]


def detection_metrics(
    truth: FullCatalog,
    est: FullCatalog,
    matches: Matches,
    ref_band: int = 0,
    mag_bins: Sequence[float] | None = None,
) -> dict:
    """Precision, recall and F1, overall and per reference-band magnitude bin.

    Args:
        truth: the true catalog.
        est: the estimated catalog of the same images.
        matches: one ``(true_idx, est_idx)`` pair per image, from
            :func:`~bliss.metrics.matching.match_full_catalogs`.
        ref_band: band of the magnitudes used for binning [default: 0].
        mag_bins: increasing AB magnitude bin edges (at least two); bin ``j`` is
            ``[mag_bins[j], mag_bins[j+1])``. ``None`` skips the binned metrics [default: None].

    Returns:
        A dict of plain Python numbers and lists:

            * ``n_true``, ``n_est``, ``n_matched`` (int); ``precision = n_matched / n_est``,
              ``recall = n_matched / n_true``, ``f1`` (float, 0.0 when undefined);
            * ``classification_accuracy`` (float), only when both catalogs have
              ``source_type`` (see :func:`classification_metrics`);
            * with ``mag_bins``: ``mag_bins`` (the edges) and ``per_bin``, a dict of lists with
              one entry per bin: ``n_true``, ``n_true_matched``, ``recall`` (binned by true
              magnitude), ``n_est``, ``n_est_matched``, ``precision`` (binned by estimated
              magnitude) and ``f1``.

    Raises:
        BlissValueError: the matches do not fit the catalogs, ``mag_bins`` is not increasing,
            or ``fluxes`` is missing when ``mag_bins`` is given.
    """
    true_matched, est_matched = _matched_masks(truth, est, matches)
    n_true = int(truth["n_sources"].sum())
    n_est = int(est["n_sources"].sum())
    n_matched = int(true_matched.sum())
    precision = _ratio(n_matched, n_est)
    recall = _ratio(n_matched, n_true)
    result: dict = {
        "n_true": n_true,
        "n_est": n_est,
        "n_matched": n_matched,
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
    }
    if "source_type" in truth and "source_type" in est:
        result["classification_accuracy"] = classification_metrics(truth, est, matches)["accuracy"]
    if mag_bins is None:
        return result

    edges = _check_bins(mag_bins)
    true_bin = _bin_index(_ref_mag("truth", truth, ref_band), edges)
    est_bin = _bin_index(_ref_mag("est", est, ref_band), edges)
    per_bin: dict[str, list] = {
        key: []
        for key in ("n_true", "n_true_matched", "recall", "n_est", "n_est_matched", "precision")
    }
    for j in range(len(edges) - 1):
        in_true = truth.is_on_mask & (true_bin == j)
        in_est = est.is_on_mask & (est_bin == j)
        counts = {
            "n_true": int(in_true.sum()),
            "n_true_matched": int((in_true & true_matched).sum()),
            "n_est": int(in_est.sum()),
            "n_est_matched": int((in_est & est_matched).sum()),
        }
        for key, value in counts.items():
            per_bin[key].append(value)
        per_bin["recall"].append(_ratio(counts["n_true_matched"], counts["n_true"]))
        per_bin["precision"].append(_ratio(counts["n_est_matched"], counts["n_est"]))
    per_bin["f1"] = [
        _f1(p, r) for p, r in zip(per_bin["precision"], per_bin["recall"], strict=True)
    ]
    result["mag_bins"] = edges
    result["per_bin"] = per_bin
    return result


def classification_metrics(truth: FullCatalog, est: FullCatalog, matches: Matches) -> dict:
    """Star/galaxy classification of the matched sources.

    A source is a galaxy when ``source_type > 0.5`` (``source_type`` is 0 for a star and 1 for a
    galaxy, so a probability of being a galaxy is thresholded at one half as well).

    Args:
        truth: the true catalog, with ``source_type`` (``b n 1``).
        est: the estimated catalog, with ``source_type`` (``b n 1``).
        matches: one ``(true_idx, est_idx)`` pair per image.

    Returns:
        ``n_matched`` (int), ``accuracy`` (float, fraction of matched pairs with the right type,
        0.0 when nothing is matched), and the confusion counts ``n_true_galaxy_est_galaxy``,
        ``n_true_galaxy_est_star``, ``n_true_star_est_galaxy``, ``n_true_star_est_star`` (int).

    Raises:
        BlissValueError: ``source_type`` is missing, or the matches do not fit the catalogs.
    """
    _matched_masks(truth, est, matches)  # validates the matches
    for name, cat in (("truth", truth), ("est", est)):
        if "source_type" not in cat:
            raise BlissValueError(
                f"{name} has keys {cat.keys()}; `source_type` (0 star, 1 galaxy) is needed for "
                "classification metrics. Add it or skip classification."
            )
    true_type, est_type = _paired_values(truth, est, matches, "source_type")
    true_gal = true_type[:, 0] > 0.5
    est_gal = est_type[:, 0].to(true_gal.device) > 0.5
    n_matched = int(true_gal.numel())
    n_correct = int((true_gal == est_gal).sum())
    return {
        "n_matched": n_matched,
        "accuracy": _ratio(n_correct, n_matched),
        "n_true_galaxy_est_galaxy": int((true_gal & est_gal).sum()),
        "n_true_galaxy_est_star": int((true_gal & ~est_gal).sum()),
        "n_true_star_est_galaxy": int((~true_gal & est_gal).sum()),
        "n_true_star_est_star": int((~true_gal & ~est_gal).sum()),
    }


def compare_counts(
    truth: FullCatalog,
    est: FullCatalog,
    ref_band: int = 0,
    mag_bins: Sequence[float] | None = None,
) -> dict:
    """Expected (true) versus observed (estimated) source counts, without matching.

    Counts that agree while precision and recall are low point at position errors; counts that
    disagree point at a biased number of detections or a biased flux scale.

    Args:
        truth: the true catalog (its counts are the "expected" ones).
        est: the estimated catalog of the same images (the "observed" counts).
        ref_band: band of the magnitudes used for binning [default: 0].
        mag_bins: increasing AB magnitude bin edges; ``None`` skips the histogram
            [default: None].

    Returns:
        ``n_true_per_image`` and ``n_est_per_image`` (lists of ``b`` ints), ``n_true`` and
        ``n_est`` (int totals); with ``mag_bins`` also ``mag_bins`` and ``n_true_per_bin``,
        ``n_est_per_bin`` (lists of ints; each catalog binned by its own magnitudes; sources
        outside the edges are not counted).

    Raises:
        BlissValueError: the catalogs cover different images, ``mag_bins`` is not increasing,
            or ``fluxes`` is missing when ``mag_bins`` is given.
    """
    _check_same_images(truth, est)
    result: dict = {
        "n_true_per_image": truth["n_sources"].tolist(),
        "n_est_per_image": est["n_sources"].tolist(),
        "n_true": int(truth["n_sources"].sum()),
        "n_est": int(est["n_sources"].sum()),
    }
    if mag_bins is None:
        return result
    edges = _check_bins(mag_bins)
    for key, name, cat in (("n_true_per_bin", "truth", truth), ("n_est_per_bin", "est", est)):
        bins = _bin_index(_ref_mag(name, cat, ref_band), edges)
        result[key] = [int((cat.is_on_mask & (bins == j)).sum()) for j in range(len(edges) - 1)]
    result["mag_bins"] = edges
    return result


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 2 * precision * recall / total if total > 0 else 0.0


def _check_bins(mag_bins: Sequence[float]) -> list[float]:
    edges = [float(edge) for edge in mag_bins]
    if len(edges) < 2 or any(lo >= hi for lo, hi in zip(edges[:-1], edges[1:], strict=True)):
        raise BlissValueError(
            f"mag_bins={edges}; expected at least two strictly increasing AB magnitude edges, "
            "e.g. [18, 20, 22, 24]."
        )
    return edges


def _ref_mag(name: str, cat: FullCatalog, band: int) -> Tensor:
    """AB magnitudes in ``band``. Shape: ``b n`` (``inf`` for non-positive fluxes)."""
    _check_band(name, cat, band)
    return nmgy_to_mag(cat["fluxes"][..., band])


def _bin_index(mag: Tensor, edges: list[float]) -> Tensor:
    """Bin of each magnitude for bins ``[lo, hi)``; -1 or ``len(edges) - 1`` when outside."""
    boundaries = torch.tensor(edges, dtype=mag.dtype, device=mag.device)
    return torch.bucketize(mag, boundaries, right=True) - 1
