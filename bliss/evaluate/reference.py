"""``mode=evaluate evaluate.reference=photoobj``: bliss and ``sep`` against a pipeline's catalog.

A real frame is cataloged by both and compared with the survey pipeline's catalog of it.

The pipeline catalog (SDSS ``photoObj``) is a reference, not ground truth: it misses faint or
blended sources and has its own spurious ones. The per-bin numbers (completeness, purity, type
agreement, median Δmag) and the "don't care" rule are those of
:func:`bliss.metrics.reference.compare_with_reference`; :mod:`bliss.evaluate.disagreements` tags
the unmatched sources with likely reasons.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.table import Table

from bliss.atomic import atomic_path
from bliss.catalog import FullCatalog
from bliss.catalog.convert import nmgy_to_mag
from bliss.catalog.io import plocs_to_xy, table_to_full_catalog
from bliss.evaluate.disagreements import list_disagreements, plot_disagreements
from bliss.evaluate.plots import plot_delta_mag
from bliss.evaluate.truth import catalog_with_bliss_and_sep
from bliss.metrics.reference import (
    REFERENCE_BIN_KEYS,
    ReferenceComparison,
    compare_with_reference,
)
from bliss.predict.plots import plot_detections
from bliss.predict.predictor import Predictor
from bliss.protocols import Survey, SurveyImage

__all__ = ["compare_image_with_reference", "format_reference_results"]

_CATALOGS = ("bliss", "sep")


def compare_image_with_reference(
    predictor: Predictor,
    survey: Survey,
    image: SurveyImage,
    reference: Table,
    *,
    threshold: float,
    match_dist_px: float,
    mag_bins: Sequence[float],
    output: Path | None = None,
    plot_box_px: int = 200,
    n_examples: int = 8,
    faint_mag: float = 22.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Catalog ``image`` with bliss and ``sep`` and compare both with ``reference``.

    Args:
        predictor: the bliss predictor.
        survey: the survey (``reference_band``, ``pixel_scale_arcsec``, ``psf_beta``).
        image: the image, on the reference catalog's pixel grid.
        reference: a table with ``x``, ``y`` (0-indexed pixels), ``flux_<band>`` (nmgy) for the
            image's bands, ``source_type`` and ``ignore`` (see
            :func:`bliss.surveys.sdss.photoobj.read_photoobj`); optional ``child`` and
            ``cosmic_ray`` columns tag disagreements.
        threshold: bliss reports sources with ``P(source) > threshold``.
        match_dist_px: largest distance of a match, pixels.
        mag_bins: r-band (reference band) AB magnitude edges.
        output: directory for ``reference_metrics.{json,csv}``, ``reference_overlay.png``,
            ``reference_delta_mag.png``, ``disagreements.{csv,png}`` [default: None, no files].
        plot_box_px: side of the overlay plot's region (the one with most reference sources).
        n_examples: cut-outs per disagreement kind in ``disagreements.png`` (sources with a
            magnitude inside ``mag_bins``).
        faint_mag: magnitude beyond which a disagreement is tagged ``faint``.
        seed: seed of the choice of example cut-outs.

    Returns:
        ``{"bliss": metrics, "sep": metrics, "disagreements": tag counts}`` (see
        :class:`~bliss.metrics.reference.ReferenceComparison`).
    """
    band = image.bands.index(survey.reference_band)
    _, height, width = image.images.shape
    ref_catalog = table_to_full_catalog(reference, image.bands, height, width, name="reference")
    dont_care = torch.from_numpy(np.asarray(reference["ignore"], dtype=bool))
    sources = dict(
        zip(_CATALOGS, catalog_with_bliss_and_sep(predictor, survey, image, threshold), strict=True)
    )
    comparisons = {
        name: compare_with_reference(
            ref_catalog,
            catalog,
            dont_care,
            band=band,
            match_dist_px=match_dist_px,
            mag_bins=mag_bins,
        )
        for name, catalog in sources.items()
    }
    disagreements = list_disagreements(comparisons, reference, image, band, faint_mag=faint_mag)
    results: dict[str, Any] = {name: c.metrics for name, c in comparisons.items()}
    results["disagreements"] = _tag_counts(disagreements)
    if output is not None:
        _write(results, comparisons, disagreements, image, band, output, mag_bins)
        plot_disagreements(
            disagreements,
            comparisons,
            image,
            band,
            output / "disagreements.png",
            n_examples=n_examples,
            seed=seed,
            mag_range=(mag_bins[0], mag_bins[-1]),
        )
        _plot_overlay(image, band, comparisons["bliss"], sources["bliss"], output, plot_box_px)
    return results


def _tag_counts(disagreements: Table) -> dict[str, Any]:
    """Tag and reason counts per kind, and the chance rates of ``masked`` / ``edge``."""
    counts: dict[str, Any] = {
        "area_fraction": {
            "masked": disagreements.meta["AREA_MASKED"],
            "edge": disagreements.meta["AREA_EDGE"],
        }
    }
    for kind in sorted(set(disagreements["kind"])):
        rows = disagreements[disagreements["kind"] == kind]
        tags: dict[str, int] = {}
        for value in rows["tags"]:
            for tag in str(value).split(";"):
                tags[tag] = tags.get(tag, 0) + 1
        reasons = {str(r): int((rows["reason"] == r).sum()) for r in sorted(set(rows["reason"]))}
        counts[str(kind)] = {"n": len(rows), "tags": tags, "reason": reasons}
    return counts


def _write(
    results: dict[str, Any],
    comparisons: dict[str, ReferenceComparison],
    disagreements: Table,
    image: SurveyImage,
    band: int,
    output: Path,
    mag_bins: Sequence[float],
) -> None:
    output.mkdir(parents=True, exist_ok=True)
    with atomic_path(output / "reference_metrics.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1, default=float))
    lines = ["catalog,mag_lo,mag_hi," + ",".join(REFERENCE_BIN_KEYS)]
    for name in _CATALOGS:
        for row in [*comparisons[name].metrics["per_bin"], comparisons[name].metrics["all"]]:
            values = ",".join(f"{row[key]:.4g}" for key in REFERENCE_BIN_KEYS)
            lines.append(f"{name},{row['mag_lo']:g},{row['mag_hi']:g},{values}")
    with atomic_path(output / "reference_metrics.csv") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(output / "disagreements.csv") as tmp:
        disagreements.write(tmp, format="ascii.csv", overwrite=True)
    pairs = {}
    for name, comparison in comparisons.items():
        ref_idx, est_idx = comparison.matches[0]
        ref_mag = nmgy_to_mag(comparison.reference["fluxes"][0, ref_idx, band]).numpy()
        est_mag = nmgy_to_mag(comparison.estimate["fluxes"][0, est_idx, band]).numpy()
        with np.errstate(invalid="ignore"):  # inf - inf for non-positive fluxes: NaN, not drawn
            pairs[name] = (ref_mag, est_mag - ref_mag)
    plot_delta_mag(
        pairs,
        output / "reference_delta_mag.png",
        list(mag_bins),
        xlabel=f"reference {image.bands[band]} magnitude",
        title=f"{image.path}: matched pairs, lines = median per bin",
    )


def _plot_overlay(
    image: SurveyImage,
    band: int,
    comparison: ReferenceComparison,
    bliss_catalog: FullCatalog,
    output: Path,
    box_px: int,
) -> Path:
    """The ``box_px`` square (on a half-box grid) holding the most reference sources."""
    _, height, width = image.images.shape
    n_ref = int(comparison.reference["n_sources"][0])
    ref_rows, ref_cols = comparison.reference["plocs"][0, :n_ref].double().numpy().T
    box_px = min(box_px, height, width)
    step = max(box_px // 2, 1)
    best, top, left = -1, 0, 0
    for r0 in range(0, max(height - box_px, 0) + 1, step):
        for c0 in range(0, max(width - box_px, 0) + 1, step):
            inside = (ref_rows >= r0) & (ref_rows < r0 + box_px)
            inside &= (ref_cols >= c0) & (ref_cols < c0 + box_px)
            if inside.sum() > best:
                best, top, left = int(inside.sum()), r0, c0
    rows, cols = bliss_catalog["plocs"][0].numpy().T
    mine = (rows >= top) & (rows < top + box_px) & (cols >= left) & (cols < left + box_px)
    theirs = (ref_rows >= top) & (ref_rows < top + box_px)
    theirs &= (ref_cols >= left) & (ref_cols < left + box_px)
    x, y = plocs_to_xy(bliss_catalog["plocs"][0].numpy()[mine])
    ref_x, ref_y = plocs_to_xy(np.stack([ref_rows[theirs], ref_cols[theirs]], -1))
    crop = (slice(top, top + box_px), slice(left, left + box_px))
    return plot_detections(
        image.images[band][crop],
        image.background[band][crop],
        output / "reference_overlay.png",
        {
            "x": x - left,
            "y": y - top,
            "prob_galaxy": bliss_catalog["prob_galaxy"][0, mine, 0].numpy(),
        },
        {"x": ref_x - left, "y": ref_y - top},
        title=(
            f"{image.path.name}: rows {top}..{top + box_px - 1}, cols {left}..{left + box_px - 1}"
            f" ({image.bands[band]}); bliss circles, reference squares (don't-care removed)"
        ),
        band=image.bands[band],
    )


def format_reference_results(results: dict[str, Any]) -> str:
    """A text table: one line per magnitude bin (and ``all``), bliss and sep side by side."""
    heads = ("compl", "purity", "type", "dmag")
    keys = ("completeness", "purity", "type_agreement", "delta_mag_median")
    header = f"{'r mag':<12}{'n_ref':>6}{'n_bliss':>8}{'n_sep':>7}"
    header += "".join(f"{f'{h} bliss':>13}{f'{h} sep':>11}" for h in heads)
    lines = [header]
    rows = [*zip(results["bliss"]["per_bin"], results["sep"]["per_bin"], strict=True)]
    rows.append((results["bliss"]["all"], results["sep"]["all"]))
    for ours, theirs in rows:
        label = f"{ours['mag_lo']:g}-{ours['mag_hi']:g}"
        line = (
            f"{label:<12}{ours['n_reference']:>6}{ours['n_detected']:>8}{theirs['n_detected']:>7}"
        )
        line += "".join(f"{ours[k]:>13.3f}{theirs[k]:>11.3f}" for k in keys)
        lines.append(line)
    return "\n".join(lines)
