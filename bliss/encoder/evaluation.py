"""Validation and test metrics of the encoder: detection, fluxes, shapes and calibration.

Calibration is measured per true source, on the posterior of the tile and slot that hold it:
the fraction of true values inside the central ``a`` posterior interval, for levels
:data:`LEVELS`, for the reference-band flux and the two location coordinates.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from bliss.catalog import TileCatalog
from bliss.catalog.full import concat_full_catalogs
from bliss.metrics import (
    detection_metrics,
    flux_metrics,
    match_full_catalogs,
    plot_calibration,
    shape_metrics,
)

if TYPE_CHECKING:
    from bliss.encoder.encoder import Encoder

__all__ = ["LEVELS", "collect_step", "summarize"]

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _coverage_counts(encoder: "Encoder", truth: TileCatalog, params: Tensor) -> dict[str, Tensor]:
    """Per level, how many true values fall inside their central interval (summed)."""
    on = truth.is_on_mask
    counts = {"flux": [], "locs": []}
    for level in LEVELS:
        low = encoder.posterior.quantiles(params, (1 - level) / 2)
        high = encoder.posterior.quantiles(params, (1 + level) / 2)
        band = encoder.reference_index
        flux = truth["fluxes"][..., band]
        inside = (flux >= low["fluxes"][..., band]) & (flux <= high["fluxes"][..., band])
        counts["flux"].append((inside & on).sum())
        locs_inside = (truth["locs"] >= low["locs"]) & (truth["locs"] <= high["locs"])
        counts["locs"].append((locs_inside & on.unsqueeze(-1)).sum())
    return {k: torch.stack(v).cpu() for k, v in counts.items()}


def collect_step(
    encoder: "Encoder", truth: TileCatalog, estimate: TileCatalog, params: Tensor
) -> dict[str, Any]:
    """What one evaluation batch contributes to the epoch's metrics."""
    coverage = _coverage_counts(encoder, truth, params)
    expected = encoder.posterior.prob_source(params).sum()
    return {
        "truth": truth.to("cpu").to_full_catalog(),
        "estimate": estimate.to("cpu").to_full_catalog(),
        "coverage": coverage,
        "n_true_slots": truth.is_on_mask.sum().cpu(),
        "expected_count": expected.cpu(),
    }


def summarize(encoder: "Encoder", steps: list[dict[str, Any]], stage: str) -> dict[str, float]:
    """Epoch metrics from the collected steps; writes a calibration PNG when a log dir exists."""
    truth = concat_full_catalogs([s["truth"] for s in steps])
    estimate = concat_full_catalogs([s["estimate"] for s in steps])
    matches = match_full_catalogs(truth, estimate, max_dist_px=encoder.match_dist_px)
    band = encoder.reference_index
    detection = detection_metrics(
        truth, estimate, matches, ref_band=band, mag_bins=encoder.mag_bins
    )
    flux = flux_metrics(truth, estimate, matches, band=band)
    # a stars-only posterior (no source_type factor) has no galaxies to measure
    shapes = shape_metrics(truth, estimate, matches) if "source_type" in estimate else {}
    n_true = float(sum(s["n_true_slots"] for s in steps))
    flux_cov = sum(s["coverage"]["flux"] for s in steps).double() / max(n_true, 1.0)
    locs_cov = sum(s["coverage"]["locs"] for s in steps).double() / max(2 * n_true, 1.0)
    metrics: dict[str, float] = {
        "precision": detection["precision"],
        "recall": detection["recall"],
        "f1": detection["f1"],
        "mag_abs_err_median": flux["mag_abs_err_median"],
        "expected_count": float(sum(s["expected_count"] for s in steps)),
        "true_count": n_true,
    }
    if "classification_accuracy" in detection:
        metrics["classification_accuracy"] = detection["classification_accuracy"]
    for j, (low, high) in enumerate(zip(encoder.mag_bins[:-1], encoder.mag_bins[1:], strict=True)):
        metrics[f"f1_mag_{low:g}_{high:g}"] = detection["per_bin"]["f1"][j]
    for key, value in shapes.items():
        if isinstance(value, float):
            metrics[f"shape_{key}"] = value
    for level, f_cov, l_cov in zip(LEVELS, flux_cov.tolist(), locs_cov.tolist(), strict=True):
        if level in (0.5, 0.9):
            metrics[f"coverage{int(level * 100)}_flux"] = f_cov
            metrics[f"coverage{int(level * 100)}_locs"] = l_cov
    log_dir = encoder.trainer.default_root_dir if encoder._trainer is not None else None
    if log_dir and encoder.global_rank == 0:
        plot_calibration(
            LEVELS,
            {"flux (reference band)": flux_cov.tolist(), "location": locs_cov.tolist()},
            Path(log_dir) / f"calibration_{stage}.png",
        )
    return metrics
