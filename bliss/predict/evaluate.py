"""``bliss mode=evaluate``: bliss and the ``sep`` baseline against truth, side by side."""

import glob
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.table import Table
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from bliss.atomic import atomic_path
from bliss.catalog import FullCatalog
from bliss.catalog.full import concat_full_catalogs
from bliss.catalog.io import table_to_full_catalog
from bliss.encoder.checkpoint import load_encoder
from bliss.errors import BlissConfigError, BlissIOError
from bliss.metrics import detection_metrics, flux_metrics, interval_coverage, match_full_catalogs
from bliss.predict.baseline import sep_catalog
from bliss.predict.plots import plot_detections, save_png
from bliss.predict.predictor import Predictor
from bliss.predict.reader import read_fits_image
from bliss.predict.run import build_predictor, match_survey_to_model
from bliss.surveys.base import SurveyImage

__all__ = [
    "catalog_with_bliss_and_sep",
    "evaluate_files",
    "evaluate_from_config",
    "expand_inputs",
    "format_results",
]

_QUANTILES = (0.05, 0.25, 0.75, 0.95)


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


def _to_full(
    sources: dict[str, np.ndarray],
    height: int,
    width: int,
    quantiles: Sequence[float] = _QUANTILES,
) -> FullCatalog:
    """A one-image catalog from predictor-style columns (``row``, ``col``, ``fluxes``, ...)."""
    n = len(sources["row"])
    data = {
        "n_sources": torch.tensor([n]),
        "plocs": torch.from_numpy(
            np.stack([sources["row"], sources["col"]], -1).reshape(1, n, 2)
        ).float(),
        "fluxes": torch.from_numpy(np.asarray(sources["fluxes"]).reshape(1, n, -1)).float(),
        "source_type": torch.from_numpy(
            (np.asarray(sources["prob_galaxy"]) > 0.5).reshape(1, n, 1)
        ).float(),
    }
    for q in quantiles:
        data[f"flux@{q:g}"] = torch.from_numpy(
            np.asarray(sources[f"fluxes@{q:g}"]).reshape(1, n, -1)
        ).float()
    return FullCatalog(height, width, data)


def _coverage(truth: FullCatalog, est: FullCatalog, matches: Any, band: int) -> dict[str, float]:
    """Fraction of matched true fluxes inside the central 50 % and 90 % posterior intervals."""
    true_flux = torch.cat([truth["fluxes"][i, t_idx, band] for i, (t_idx, _) in enumerate(matches)])
    result = {}
    for level, (lo, hi) in ((50, (0.25, 0.75)), (90, (0.05, 0.95))):
        low, high = (
            torch.cat([est[f"flux@{q:g}"][i, e_idx, band] for i, (_, e_idx) in enumerate(matches)])
            for q in (lo, hi)
        )
        result[f"coverage{level}_flux"] = interval_coverage(true_flux, low, high)
    return result


def _metrics(
    truth: FullCatalog, est: FullCatalog, band: int, match_dist_px: float, mag_bins: Sequence[float]
) -> dict:
    matches = match_full_catalogs(truth, est, max_dist_px=match_dist_px)
    detection = detection_metrics(truth, est, matches, ref_band=band, mag_bins=list(mag_bins))
    flux = flux_metrics(truth, est, matches, band=band)
    return {
        **detection,
        "mag_abs_err_median": flux["mag_abs_err_median"],
        **_coverage(truth, est, matches, band),
    }


def catalog_with_bliss_and_sep(
    predictor: Predictor,
    survey: Any,
    image: SurveyImage,
    threshold: float,
    quantiles: tuple[float, ...] = _QUANTILES,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The bliss catalog (``P(source) > threshold``) and the ``sep`` baseline of one image.

    Returns:
        ``(bliss, sep)``: predictor-style columns (``row``, ``col`` with the origin at the image
        corner, ``prob_galaxy``, ``fluxes`` in nmgy, ``fluxes@<q>``).
    """
    ours = predictor.predict(image, threshold=threshold, quantiles=quantiles)["sources"]
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
    survey: Any,
    images: Sequence[Path],
    truths: Sequence[Path],
    *,
    threshold: float,
    match_dist_px: float,
    mag_bins: Sequence[float],
    output: Path | None = None,
) -> dict[str, dict]:
    """Run bliss and ``sep`` on every image, match both to the truth and summarise.

    Returns:
        ``{"bliss": metrics, "sep": metrics}`` with overall and per-bin precision / recall / F1,
        classification accuracy, median |Δmag| and 50 % / 90 % flux interval coverage.
    """
    if len(images) != len(truths):
        raise BlissConfigError(
            f"evaluate.input has {len(images)} files but evaluate.truth has {len(truths)}; give one "
            "truth table per image, in the same order."
        )
    band = survey.bands.index(survey.reference_band)
    catalogs: dict[str, list[FullCatalog]] = {"truth": [], "bliss": [], "sep": []}
    for index, (image_path, truth_path) in enumerate(zip(images, truths, strict=True)):
        image = read_fits_image(image_path, survey, predictor.encoder.bands)
        _, h, w = image.images.shape
        ours, baseline = catalog_with_bliss_and_sep(predictor, survey, image, threshold)
        try:
            truth_table = Table.read(truth_path)
        except Exception as err:
            raise BlissIOError(f"truth table {truth_path} cannot be read ({err}).") from err
        catalogs["truth"].append(
            table_to_full_catalog(truth_table, survey.bands, h, w, name=str(truth_path))
        )
        catalogs["bliss"].append(_to_full(ours, h, w))
        catalogs["sep"].append(_to_full(baseline, h, w))
        if output is not None and index == 0:
            truth = catalogs["truth"][-1]
            n = int(truth["n_sources"][0])
            reference = {
                "x": truth["plocs"][0, :n, 1].numpy() - 0.5,
                "y": truth["plocs"][0, :n, 0].numpy() - 0.5,
            }
            plot_detections(
                image.images[band],
                image.background[band],
                output / "detections_bliss.png",
                {
                    "x": ours["col"] - 0.5,
                    "y": ours["row"] - 0.5,
                    "prob_galaxy": ours["prob_galaxy"],
                },
                reference,
                title=f"{image_path.name}: bliss (circles) vs truth (squares)",
            )
    truth = concat_full_catalogs(catalogs["truth"])
    results = {
        name: _metrics(truth, concat_full_catalogs(catalogs[name]), band, match_dist_px, mag_bins)
        for name in ("bliss", "sep")
    }
    if output is not None:
        _write(results, output, mag_bins)
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


def _write(results: dict[str, dict], output: Path, mag_bins: Sequence[float]) -> None:
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


def format_results(results: dict[str, dict], mag_bins: Sequence[float]) -> str:
    """A side-by-side text table."""
    lines = [f"{'metric':<28}{'bliss':>10}{'sep':>10}"]
    lines += [f"{k:<28}{a:>10.3f}{b:>10.3f}" for k, a, b in _summary_rows(results, mag_bins)]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, ListConfig) else value


def evaluate_from_config(cfg: DictConfig) -> dict[str, dict]:
    """Run ``mode=evaluate`` from the composed config.

    With ``evaluate.reference`` set (``photoobj``), this is
    :func:`bliss.predict.reference.compare_from_config`: a real frame against a survey
    pipeline's catalog instead of simulated images against their truth.
    """
    spec = cfg.evaluate
    if spec.get("reference") is not None:
        from bliss.predict.reference import compare_from_config

        return compare_from_config(cfg)
    images = expand_inputs(_plain(spec.input), "evaluate.input")
    truths = expand_inputs(_plain(spec.truth), "evaluate.truth")
    encoder, model_config = load_encoder(spec.checkpoint)
    survey = instantiate(cfg.survey)
    match_survey_to_model(survey, model_config)
    predictor = build_predictor(cfg.predict, encoder, model_config, progress=False)
    results = evaluate_files(
        predictor,
        survey,
        images,
        truths,
        threshold=spec.threshold,
        match_dist_px=spec.match_dist_px,
        mag_bins=list(spec.mag_bins),
        output=Path(spec.output),
    )
    print(format_results(results, list(spec.mag_bins)))
    return results
