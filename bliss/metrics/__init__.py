"""Metrics comparing an estimated catalog with the truth.

Typical use: match each image with :func:`match_full_catalogs`, then pass the matches to
:func:`detection_metrics`, :func:`flux_metrics` and :func:`shape_metrics`. Every metric returns
plain Python numbers and lists, ready for a logger or ``json.dump``.
"""

from bliss.metrics.detection import classification_metrics, compare_counts, detection_metrics
from bliss.metrics.flux import calibration_curve, flux_metrics, interval_coverage
from bliss.metrics.matching import Matches, match_catalogs, match_full_catalogs
from bliss.metrics.plots import plot_calibration
from bliss.metrics.reference import (
    REFERENCE_BIN_KEYS,
    ReferenceComparison,
    compare_with_reference,
)
from bliss.metrics.shape import SHAPE_KEYS, circular_abs_diff, shape_metrics
from bliss.metrics.shear import grouped_shear_bias, map_correlation, per_image_rmse, shear_bias

__all__ = [
    "REFERENCE_BIN_KEYS",
    "SHAPE_KEYS",
    "ReferenceComparison",
    "Matches",
    "calibration_curve",
    "circular_abs_diff",
    "classification_metrics",
    "compare_counts",
    "compare_with_reference",
    "detection_metrics",
    "flux_metrics",
    "grouped_shear_bias",
    "interval_coverage",
    "map_correlation",
    "match_catalogs",
    "match_full_catalogs",
    "per_image_rmse",
    "plot_calibration",
    "shape_metrics",
    "shear_bias",
]
