"""Simulated images against their truth: bliss and the ``sep`` baseline side by side."""

import glob
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from astropy.table import Table

from bliss.atomic import atomic_path
from bliss.catalog import FullCatalog
from bliss.catalog.full import concat_full_catalogs
from bliss.catalog.io import plocs_to_xy, table_to_full_catalog
from bliss.errors import BlissConfigError, BlissIOError
from bliss.evaluate.baseline import sep_catalog
from bliss.metrics import detection_metrics, flux_metrics, match_full_catalogs
from bliss.metrics.calibration import (
    binned_coverage,
    interval_hits,
    level_quantiles,
    profile_bias,
    reliability,
)
from bliss.metrics.plots import plot_calibration
from bliss.predict.plots import plot_detections, save_png
from bliss.predict.predictor import Predictor
from bliss.protocols import Survey, SurveyImage

__all__ = [
    "catalog_with_bliss_and_sep",
    "evaluate_files",
    "expand_inputs",
    "format_results",
    "with_source_type",
]

_QUANTILES = (0.05, 0.25, 0.75, 0.95)
#: central-interval levels whose coverage is reported by default
LEVELS = (0.5, 0.9)


def level_set_quantiles(levels: Sequence[float]) -> tuple[float, ...]:
    """The quantile probabilities that the central intervals at ``levels`` need, sorted."""
    return tuple(sorted({q for level in levels for q in level_quantiles(level)}))


def expand_inputs(spec: str | Sequence[str] | None, key: str) -> list[Path]:
    """A glob or list of paths -> sorted existing files.

    Raises:
        BlissConfigError: nothing given or nothing matches.
    """
    if spec is None:
        raise BlissConfigError(
            f"{key} is not set; give a FITS file, a list, or a glob such as 'fields/*.fits'."
        )
    items = [spec] if isinstance(spec, str) else list(spec)
    paths: list[Path] = []
    for item in items:
        matched = sorted(glob.glob(str(item)))
        if not matched:
            raise BlissIOError(f"{key}: {item} matches no file.")
        paths += [Path(m) for m in matched]
    return paths


def with_source_type(catalog: FullCatalog) -> FullCatalog:
    """``catalog`` with ``source_type`` (``prob_galaxy > 0.5``) when it has only probabilities.

    The metrics score types by ``source_type``; the predictor reports ``prob_galaxy``.
    """
    if "source_type" in catalog or "prob_galaxy" not in catalog:
        return catalog
    data = dict(catalog.items())
    data["source_type"] = (catalog["prob_galaxy"] > 0.5).float()
    return FullCatalog(catalog.height_px, catalog.width_px, data)


def _coverage(truth: FullCatalog, est: FullCatalog, matches: Any, band: int) -> dict[str, float]:
    """Fraction of matched true fluxes inside the central 50 % and 90 % posterior intervals."""
    result = {}
    for level in (0.5, 0.9):
        hits = interval_hits(truth, est, matches, "fluxes", level)[:, band]
        result[f"coverage{level * 100:.0f}_flux"] = (
            float(hits.double().mean()) if hits.numel() else math.nan
        )
    return result


def _metrics(
    truth: FullCatalog,
    est: FullCatalog,
    band: int,
    match_dist_px: float,
    mag_bins: Sequence[float],
    bands: Sequence[str] | None = None,
    levels: Sequence[float] = (),
) -> dict:
    """Detection, flux error and pooled coverage; with ``bands``, coverage per bin and type too."""
    matches = match_full_catalogs(truth, est, max_dist_px=match_dist_px)
    detection = detection_metrics(truth, est, matches, ref_band=band, mag_bins=list(mag_bins))
    flux = flux_metrics(truth, est, matches, band=band, mag_bins=list(mag_bins))
    result = {
        **detection,
        "mag_abs_err_median": flux["mag_abs_err_median"],
        "mag_bias_median": flux["mag_bias_median"],
        **_coverage(truth, est, matches, band),
    }
    if bands is not None:
        result["calibration"] = binned_coverage(
            truth, est, matches, ref_band=band, bands=bands, mag_bins=mag_bins
        )
        result["reliability"] = reliability(truth, est, matches, levels, bands=bands)
        if "disk_frac" in truth:
            result["galaxy_profiles"] = profile_bias(
                truth, est, matches, ref_band=band, mag_bins=mag_bins
            )
    return result


def catalog_with_bliss_and_sep(
    predictor: Predictor,
    survey: Survey,
    image: SurveyImage,
    threshold: float,
    quantiles: tuple[float, ...] = _QUANTILES,
) -> tuple[FullCatalog, FullCatalog]:
    """The bliss catalog (``P(source) > threshold``) and the ``sep`` baseline of one image.

    Returns:
        ``(bliss, sep)``: one-image catalogs with ``plocs``, ``prob_galaxy``, ``source_type``,
        ``fluxes`` (nmgy) and ``fluxes@<q>``.
    """
    ours = with_source_type(predictor.predict(image, threshold=threshold, quantiles=quantiles))
    baseline = sep_catalog(
        image,
        survey.reference_band,
        survey.pixel_scale_arcsec,
        survey.psf_beta,
        quantiles=quantiles,
    )
    return ours, baseline


def evaluate_files(
    predictor: Predictor,
    survey: Survey,
    images: Sequence[Path],
    truths: Sequence[Path],
    *,
    threshold: float,
    match_dist_px: float,
    mag_bins: Sequence[float],
    output: Path | None = None,
    sky: str = "included",
    levels: Sequence[float] = LEVELS,
) -> dict[str, dict]:
    """Run bliss and ``sep`` on every image, match both to the truth and summarise.

    ``sky`` says whether the images' pixels hold the sky (``evaluate.sky``, see
    :func:`bliss.surveys.fits_reader.read_fits_image`). ``levels`` are the central-interval
    levels of bliss's reliability curves (0.5 and 0.9 always among them).

    Returns:
        ``{"bliss": metrics, "sep": metrics}`` with overall and per-bin precision / recall / F1,
        classification accuracy, median |Δmag| and bias, and 50 % / 90 % flux interval
        coverage; bliss's also with ``calibration`` (90 % coverage of every band's flux and of
        the position, per true r bin and type, see
        :func:`bliss.metrics.calibration.binned_coverage`) and ``reliability`` (coverage at each
        level, see :func:`bliss.metrics.calibration.reliability`).
    """
    if len(images) != len(truths):
        raise BlissConfigError(
            f"evaluate.input has {len(images)} files but evaluate.truth has {len(truths)}; give one "
            "truth table per image, in the same order."
        )
    band = survey.bands.index(survey.reference_band)
    levels = tuple(sorted({*LEVELS, *(float(level) for level in levels)}))
    quantiles = level_set_quantiles(levels)
    catalogs: dict[str, list[FullCatalog]] = {"truth": [], "bliss": [], "sep": []}
    for index, (image_path, truth_path) in enumerate(zip(images, truths, strict=True)):
        image = survey.read_image(image_path, tuple(predictor.encoder.bands), sky=sky)
        _, h, w = image.images.shape
        ours, baseline = catalog_with_bliss_and_sep(predictor, survey, image, threshold, quantiles)
        try:
            truth_table = Table.read(truth_path)
        except Exception as err:
            raise BlissIOError(f"truth table {truth_path} cannot be read ({err}).") from err
        catalogs["truth"].append(
            table_to_full_catalog(truth_table, survey.bands, h, w, name=str(truth_path))
        )
        catalogs["bliss"].append(ours)
        catalogs["sep"].append(baseline)
        if output is not None and index == 0:
            truth = catalogs["truth"][-1]
            true_x, true_y = plocs_to_xy(truth["plocs"][0, : int(truth["n_sources"][0])].numpy())
            ours_x, ours_y = plocs_to_xy(ours["plocs"][0].numpy())
            detections = {"x": ours_x, "y": ours_y}
            if "prob_galaxy" in ours:  # a stars-only model has none
                detections["prob_galaxy"] = ours["prob_galaxy"][0, :, 0].numpy()
            plot_detections(
                image.images[band],
                image.background[band],
                output / "detections_bliss.png",
                detections,
                {"x": true_x, "y": true_y},
                title=f"{image_path.name}: bliss (circles) vs truth (squares)",
                band=image.bands[band],
            )
    truth = concat_full_catalogs(catalogs["truth"])
    results = {
        "bliss": _metrics(
            truth,
            concat_full_catalogs(catalogs["bliss"]),
            band,
            match_dist_px,
            mag_bins,
            bands=tuple(predictor.encoder.bands),
            levels=levels,
        ),
        "sep": _metrics(
            truth, concat_full_catalogs(catalogs["sep"]), band, match_dist_px, mag_bins
        ),
    }
    if output is not None:
        _write(results, output, mag_bins, survey.reference_band)
    return results


_SUMMARY_KEYS = (
    "precision",
    "recall",
    "f1",
    "classification_accuracy",
    "mag_abs_err_median",
    "coverage50_flux",
    "coverage90_flux",
)


def _summary_rows(
    results: dict[str, dict], mag_bins: Sequence[float]
) -> list[tuple[str, float, float]]:
    """``(metric, bliss, sep)`` rows: the overall metrics, then F1 per magnitude bin."""
    nan = float("nan")
    rows = [
        (key, results["bliss"].get(key, nan), results["sep"].get(key, nan)) for key in _SUMMARY_KEYS
    ]
    for j, (lo, hi) in enumerate(zip(mag_bins[:-1], mag_bins[1:], strict=True)):
        rows.append(
            (
                f"f1_mag_{lo:g}_{hi:g}",
                results["bliss"]["per_bin"]["f1"][j],
                results["sep"]["per_bin"]["f1"][j],
            )
        )
    return rows


def _write(
    results: dict[str, dict], output: Path, mag_bins: Sequence[float], reference_band: str
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    output.mkdir(parents=True, exist_ok=True)
    with atomic_path(output / "metrics.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1, default=float))
    lines = ["metric,bliss,sep"] + [
        f"{k},{a:.4f},{b:.4f}" for k, a, b in _summary_rows(results, mag_bins)
    ]
    with atomic_path(output / "metrics.csv") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    ours = results["bliss"]
    if "calibration" in ours:
        _write_calibration(ours["calibration"], ours["reliability"], output, reference_band)
    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    centres = [(lo + hi) / 2 for lo, hi in zip(mag_bins[:-1], mag_bins[1:], strict=True)]
    for name in ("bliss", "sep"):
        axes.plot(centres, results[name]["per_bin"]["f1"], marker="o", label=name)
    axes.set_xlabel("reference-band magnitude")
    axes.set_ylabel("F1")
    axes.legend()
    save_png(figure, output / "f1_by_magnitude.png")


def _write_calibration(
    rows: list[dict], curves: dict[str, list[float]], output: Path, reference: str
) -> None:
    """``calibration.csv`` (one line per type and bin) and ``reliability.png``."""
    columns = list(rows[0])
    lines = [",".join(columns)] + [
        ",".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns)
        for row in rows
    ]
    with atomic_path(output / "calibration.csv") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    # the reference band's flux and the position, per type: the curves a reader looks at first
    shown = {
        name: values
        for name, values in curves.items()
        if name != "levels" and (name.endswith(" position") or name.endswith(f" flux_{reference}"))
    }
    plot_calibration(curves["levels"], shown, output / "reliability.png")


def format_results(results: dict[str, dict], mag_bins: Sequence[float]) -> str:
    """A side-by-side text table."""
    lines = [f"{'metric':<28}{'bliss':>10}{'sep':>10}"]
    lines += [f"{k:<28}{a:>10.3f}{b:>10.3f}" for k, a, b in _summary_rows(results, mag_bins)]
    return "\n".join(lines)
