"""Scoring: against simulated truth or a survey pipeline's catalog, the sep baseline, disagreement tags."""

from bliss.evaluate.baseline import sep_catalog
from bliss.evaluate.disagreements import list_disagreements, plot_disagreements
from bliss.evaluate.reference import compare_image_with_reference, format_reference_results
from bliss.evaluate.truth import catalog_with_bliss_and_sep, evaluate_files, format_results

__all__ = [
    "catalog_with_bliss_and_sep",
    "compare_image_with_reference",
    "evaluate_files",
    "format_reference_results",
    "format_results",
    "list_disagreements",
    "plot_disagreements",
    "sep_catalog",
]
