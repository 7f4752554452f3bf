"""``bliss mode=predict``: a FITS image in, a catalog (and a PNG) out."""

import hashlib
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import bliss
from bliss.encoder.checkpoint import checkpoint_hash, load_encoder
from bliss.errors import BlissConfigError
from bliss.predict.plots import plot_detections
from bliss.predict.predictor import Predictor
from bliss.predict.reader import read_fits_image
from bliss.predict.table import catalog_table, stack_samples, write_table
from bliss.surveys.base import ImageSource

__all__ = [
    "build_predictor",
    "match_survey_to_model",
    "git_sha",
    "load_model_and_survey",
    "predict_file",
    "predict_from_config",
    "table_meta",
]


def git_sha() -> str:
    """The git commit of the bliss source tree, or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(bliss.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def predict_file(
    predictor: Predictor,
    survey: Any,
    input_path: str | Path,
    output: str | Path,
    *,
    threshold: float,
    n_samples: int,
    plot: bool,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Catalog one FITS file and write the catalog, the samples and the PNG."""
    output = Path(output)
    if isinstance(survey, ImageSource):  # e.g. survey=sdss_frames reads run/camcol/field itself
        image = survey.load_image(tuple(predictor.encoder.bands))
        input_path = image.path
    else:
        image = read_fits_image(input_path, survey, predictor.encoder.bands)
    result = predictor.predict(image, threshold=threshold, n_samples=n_samples)
    meta = {**meta, "INPUT": str(input_path), "NSOURCES": len(result["sources"]["row"])}
    if predictor.applies_aperture_correction(image):  # record what scaled the fluxes
        for band, factor in zip(image.bands, image.aperture_correction, strict=True):
            meta[f"APCOR_{band.upper()}"] = round(float(factor), 5)
    table = catalog_table(result["sources"], image.bands, image.wcs, meta)
    written = {"catalog": write_table(table, output)}
    if n_samples:
        samples = [
            catalog_table(s, image.bands, image.wcs, meta, interval=(0, 0))
            for s in result["samples"]
        ]
        written["samples"] = write_table(
            stack_samples(samples), output.with_name(f"{output.stem}_samples{output.suffix}")
        )
    if plot:
        ref = image.bands.index(survey.reference_band)
        detections = {"x": table["x"].value, "y": table["y"].value}
        if "prob_galaxy" in table.colnames:
            detections["prob_galaxy"] = table["prob_galaxy"]
        written["plot"] = plot_detections(
            image.images[ref],
            image.background[ref],
            output.with_suffix(".png"),
            detections,
            title=f"{Path(input_path).name}: {len(table)} sources",
        )
    return {"table": table, "written": written, "samples": result["samples"]}


def build_predictor(
    spec: DictConfig, encoder: Any, model_config: dict[str, Any], progress: bool = True
) -> Predictor:
    """The :class:`Predictor` for a ``predict`` config section and a loaded model.

    ``window_px: auto`` uses the image size recorded in the model's training config.
    """
    window = spec.window_px
    if window == "auto":
        window = int(model_config["simulator"]["image_size"])
    return Predictor(
        encoder,
        window_px=window,
        margin_px=spec.margin_px,
        chunk_px=spec.chunk_px,
        batch_chunks=spec.batch_chunks,
        device=spec.device,
        progress=progress,
        model_magzero=_model_magzero(model_config, encoder.bands),
        # a frame's aperture correction is measured against its psField PSFs (with the model's
        # halo): right for models trained on those (experiment=sdss_real), not on Moffat PSFs
        aperture_correction=_observed_conditions(model_config) is not None,
        precision=spec.get("precision", "32-true"),
    )


def _observed_conditions(model_config: dict[str, Any]) -> dict[str, Any] | None:
    """The observed PSFs and skies the model was trained on (``simulator.conditions.observed``)."""
    return ((model_config.get("simulator") or {}).get("conditions") or {}).get("observed")


def _model_magzero(model_config: dict[str, Any], bands: Sequence[str]) -> list[float] | None:
    """Zero points of the model's training survey, if its config records them."""
    magzero = model_config.get("survey", {}).get("magzero")
    if not isinstance(magzero, Mapping) or not all(b in magzero for b in bands):
        return None
    return [float(magzero[b]) for b in bands]


def load_model_and_survey(cfg: DictConfig) -> tuple[Any, dict[str, Any], Any]:
    """The checkpoint's encoder, its recorded config and the survey, checked to agree on bands.

    Raises:
        BlissConfigError: ``predict.n_samples`` is negative, or the bands differ.
    """
    spec = cfg.predict
    if spec.n_samples < 0:
        raise BlissConfigError(f"predict.n_samples={spec.n_samples}; expected an integer >= 0.")
    encoder, model_config = load_encoder(spec.checkpoint)
    survey = instantiate(cfg.survey)
    if tuple(encoder.bands) != tuple(survey.bands):
        raise BlissConfigError(
            f"checkpoint {spec.checkpoint} is for bands {list(encoder.bands)} but survey={cfg.survey.name} "
            f"has {list(survey.bands)}; pick the matching survey or checkpoint."
        )
    match_survey_to_model(survey, model_config)
    return encoder, model_config, survey


def match_survey_to_model(survey: Any, model_config: dict[str, Any]) -> None:
    """Measure a real frame's aperture corrections against the PSFs the model was trained on.

    A model trained on psField PSFs with a halo (``simulator.conditions.observed.halo``) gets
    that halo in ``survey.psf_halo`` (unless set); a model trained on parametric PSFs takes no
    aperture correction, so none is measured.
    """
    observed = _observed_conditions(model_config)
    halo = (observed or {}).get("halo")
    if halo is not None and getattr(survey, "psf_halo", False) is None:
        survey.psf_halo = dict(halo)
    if observed is None and getattr(survey, "aperture_correction", False):
        survey.aperture_correction = False


def table_meta(checkpoint: str | Path, config_yaml: str) -> dict[str, Any]:
    """The provenance every catalog records: versions, config and checkpoint hashes."""
    return {
        "BLISSVER": bliss.__version__,
        "GITSHA": git_sha(),
        "CFGHASH": hashlib.sha256(config_yaml.encode()).hexdigest()[:16],
        "CKPT": Path(checkpoint).name,
        "CKPTHASH": checkpoint_hash(checkpoint),
    }


def predict_from_config(cfg: DictConfig) -> dict[str, Any]:
    """Run ``mode=predict`` from the composed config.

    With several inputs (``predict.input`` a list or a glob, or ``survey.fields``) this is
    :func:`bliss.predict.loop.predict_inputs_from_config`.
    """
    from bliss.predict.inputs import has_several_inputs

    if has_several_inputs(cfg):
        from bliss.predict.loop import predict_inputs_from_config

        return predict_inputs_from_config(cfg)
    spec = cfg.predict
    encoder, model_config, survey = load_model_and_survey(cfg)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    meta = table_meta(spec.checkpoint, config_yaml)
    predictor = build_predictor(spec, encoder, model_config)
    result = predict_file(
        predictor,
        survey,
        spec.input,
        spec.output,
        threshold=spec.threshold,
        n_samples=spec.n_samples,
        plot=spec.plot,
        meta=meta,
    )
    config_path = Path(spec.output).with_suffix(".config.yaml")
    config_path.write_text(config_yaml)
    print(f"{len(result['table'])} sources -> {spec.output}")
    return result
