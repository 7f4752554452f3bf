"""Crowded-field scores: F1 under the StarNet/PCAT protocol, count-interval coverage, close pairs,
neighbours of bright stars.

Every function takes plain arrays of one field: positions ``n 2`` in pixels ``(row, col)`` and
reference-band magnitudes ``n``.
"""

from dataclasses import dataclass, fields

import numpy as np
import torch
from scipy.spatial import KDTree

from bliss.metrics import match_catalogs

__all__ = [
    "BrightStarScore",
    "DetectionScore",
    "bright_star_score",
    "close_pairs",
    "count_interval",
    "detection_score",
    "neighbours_of_bright",
]


class _Counts:
    """Counts of one field that add up over fields with ``+``, field by field."""

    def __add__(self, other):
        return type(self)(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass
class DetectionScore(_Counts):
    """Counts of one comparison; add scores of several fields with ``+``."""

    n_true: int = 0
    n_est: int = 0
    n_matched: int = 0

    @property
    def precision(self) -> float:
        """Matched estimates over estimates."""
        return self.n_matched / self.n_est if self.n_est else float("nan")

    @property
    def recall(self) -> float:
        """Matched true sources over true sources."""
        return self.n_matched / self.n_true if self.n_true else float("nan")

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0 when nothing matched)."""
        if not self.n_matched:
            return 0.0
        return 2 * self.precision * self.recall / (self.precision + self.recall)


def detection_score(
    true_plocs: np.ndarray,
    true_mag: np.ndarray,
    est_plocs: np.ndarray,
    est_mag: np.ndarray,
    max_dist_px: float,
    max_mag_diff: float | None = None,
    mag_limit: float = 22.0,
) -> DetectionScore:
    """One-to-one matches of the sources brighter than ``mag_limit`` on both sides.

    Both catalogs are cut at ``mag_limit`` in their own magnitudes (the StarNet/PCAT protocol),
    then matched within ``max_dist_px`` and, when given, ``max_mag_diff`` magnitudes.

    Example:
        >>> score = detection_score(np.array([[1.0, 1.0], [5.0, 5.0]]), np.array([20.0, 21.0]),
        ...                         np.array([[1.2, 1.0], [9.0, 9.0]]), np.array([20.3, 21.0]), 0.5, 0.5)
        >>> score.n_matched, score.f1
        (1, 0.5)
    """
    keep_true = true_mag < mag_limit
    keep_est = est_mag < mag_limit
    true_t = torch.as_tensor(true_plocs[keep_true], dtype=torch.float64).reshape(-1, 2)
    est_t = torch.as_tensor(est_plocs[keep_est], dtype=torch.float64).reshape(-1, 2)
    mags = {}
    if max_mag_diff is not None:
        mags = {
            "true_mag": torch.as_tensor(true_mag[keep_true], dtype=torch.float64),
            "est_mag": torch.as_tensor(est_mag[keep_est], dtype=torch.float64),
            "max_mag_diff": max_mag_diff,
        }
    true_idx, _ = match_catalogs(true_t, est_t, max_dist_px=max_dist_px, **mags)
    return DetectionScore(int(keep_true.sum()), int(keep_est.sum()), int(true_idx.numel()))


def count_interval(sample_counts: np.ndarray, level: float = 0.9) -> tuple[float, float]:
    """Central ``level`` interval of the counts of joint posterior samples (``s``)."""
    tail = (1 - level) / 2
    low, high = np.quantile(sample_counts, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def close_pairs(plocs: np.ndarray, low_px: float = 0.5, high_px: float = 1.5) -> int:
    """Pairs of sources whose separation is in ``[low_px, high_px)`` pixels.

    Example:
        >>> close_pairs(np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 3.0]]))
        1
    """
    if len(plocs) < 2:
        return 0
    tree = KDTree(plocs)
    return len(tree.query_pairs(high_px - 1e-12)) - len(tree.query_pairs(low_px - 1e-12))


def neighbours_of_bright(
    plocs: np.ndarray,
    mags: np.ndarray,
    area_px2: float,
    bright_mag: float = 17.5,
    faint_mag: float = 22.0,
    radius_px: float = 2.5,
) -> tuple[int, float, float]:
    """How many sources sit around the bright ones, against a uniform field of the same density.

    A catalog that splits a bright star into several detections puts more sources brighter than
    ``faint_mag`` within ``radius_px`` of it than the field's mean density does. Returns the
    number of sources brighter than ``bright_mag``, their mean number of neighbours brighter than
    ``faint_mag`` (themselves left out), and the number expected at the catalog's mean density
    of such sources over ``area_px2``.

    Example:
        >>> plocs = np.array([[10.0, 10.0], [10.0, 11.0], [11.0, 10.0], [40.0, 40.0]])
        >>> n, mean, expected = neighbours_of_bright(plocs, np.array([16, 21, 21, 21]), 2500.0)
        >>> n, mean, round(expected, 4)
        (1, 2.0, 0.0314)
    """
    if not bright_mag <= faint_mag:
        raise ValueError(f"bright_mag={bright_mag} is fainter than faint_mag={faint_mag}.")
    bright = mags < bright_mag
    faint = mags < faint_mag
    expected = float(faint.sum()) / area_px2 * np.pi * radius_px**2
    if not bright.any() or faint.sum() < 2:
        return int(bright.sum()), float("nan"), expected
    tree = KDTree(plocs[faint])
    found = tree.query_ball_point(plocs[bright], radius_px, return_length=True)
    # each bright source is itself in the faint sample (bright_mag < faint_mag)
    return int(bright.sum()), float(np.mean(found) - 1), expected


@dataclass
class BrightStarScore(_Counts):
    """How the brightest true stars of fields fare; add scores of several fields with ``+``."""

    n: int = 0
    found: int = 0
    excess: int = 0

    @property
    def found_share(self) -> float:
        """Share of the bright stars with a detection of about their magnitude on them."""
        return self.found / self.n if self.n else float("nan")

    @property
    def mean_excess(self) -> float:
        """Detections around a bright star beyond the true stars there, per bright star."""
        return self.excess / self.n if self.n else float("nan")


def bright_star_score(
    true_plocs: np.ndarray,
    true_mag: np.ndarray,
    est_plocs: np.ndarray,
    est_mag: np.ndarray,
    bright_mag: float = 15.0,
    match_px: float = 1.0,
    max_mag_diff: float = 0.5,
    radius_px: float = 2.5,
    faint_mag: float = 22.0,
) -> BrightStarScore:
    """Are the true stars brighter than ``bright_mag`` found whole, or split into pieces?

    A bright star is found when a detection within ``match_px`` has its magnitude to within
    ``max_mag_diff``. Its excess is the number of detections brighter than ``faint_mag`` within
    ``radius_px`` of it less the number of true stars brighter than ``faint_mag`` there: a star
    put down as a ring of fainter pieces is not found and has a positive excess.

    Example:
        >>> true = np.array([[10.0, 10.0], [30.0, 30.0]]), np.array([13.0, 20.0])
        >>> split = np.array([[10.0, 11.5], [10.0, 8.5], [11.5, 10.0]]), np.array([14.5, 14.6, 14.8])
        >>> score = bright_star_score(*true, *split)
        >>> score.n, score.found, score.excess
        (1, 0, 2)
    """
    bright = np.flatnonzero(true_mag < bright_mag)
    if not len(bright):
        return BrightStarScore()
    est_faint = est_mag < faint_mag
    true_tree = KDTree(true_plocs[true_mag < faint_mag])
    est_tree = KDTree(est_plocs[est_faint]) if est_faint.any() else None
    found = excess = 0
    for i in bright:
        n_true = len(true_tree.query_ball_point(true_plocs[i], radius_px))
        near = [] if est_tree is None else est_tree.query_ball_point(true_plocs[i], radius_px)
        excess += len(near) - n_true
        dist = np.hypot(*(est_plocs - true_plocs[i]).T) if len(est_plocs) else np.zeros(0)
        close = (dist < match_px) & (np.abs(est_mag - true_mag[i]) < max_mag_diff)
        found += int(close.any())
    return BrightStarScore(len(bright), found, excess)
