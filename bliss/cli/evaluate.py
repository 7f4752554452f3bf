"""``bliss mode=evaluate``: bliss and ``sep`` against simulated truth, or a real frame against photoObj."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bliss.cli.model import load_model_and_survey, predictor_settings
from bliss.errors import BlissConfigError

__all__ = ["run_evaluate"]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_list(value) else value


def run_evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``mode=evaluate``.

    With ``evaluate.reference=photoobj``, a real SDSS frame (``survey=sdss_frames``) against the
    SDSS pipeline's catalog; otherwise ``evaluate.input`` images against ``evaluate.truth``.

    Raises:
        BlissConfigError: an unknown ``evaluate.reference``, a survey that does not read its own
            frames for ``photoobj``, inputs and truths that do not pair up, or a checkpoint for
            other bands.
    """
    spec = cfg.evaluate
    if spec.get("reference") is not None:
        return _compare_with_photoobj(cfg)
    from bliss.evaluate.truth import evaluate_files, expand_inputs, format_results
    from bliss.metrics.calibration import format_binned_coverage, format_profile_bias
    from bliss.predict.predictor import build_predictor

    images = expand_inputs(_plain(spec.input), "evaluate.input")
    truths = expand_inputs(_plain(spec.truth), "evaluate.truth")
    encoder, model, survey = load_model_and_survey(spec.checkpoint, cfg.survey)
    predictor = build_predictor(
        predictor_settings(cfg.predict), encoder, model, progress=False, survey=survey
    )
    results = evaluate_files(
        predictor,
        survey,
        images,
        truths,
        threshold=spec.threshold,
        match_dist_px=spec.match_dist_px,
        mag_bins=list(spec.mag_bins),
        output=Path(spec.output),
        sky=spec.get("sky", "included"),
    )
    print(format_results(results, list(spec.mag_bins)))
    print(format_binned_coverage(results["bliss"]["calibration"], tuple(encoder.bands)))
    if "galaxy_profiles" in results["bliss"]:
        print(format_profile_bias(results["bliss"]["galaxy_profiles"]))
    return results


def _compare_with_photoobj(cfg: DictConfig) -> dict[str, Any]:
    """``evaluate.reference=photoobj``: a real frame, bliss and ``sep`` against photoObj."""
    from bliss.evaluate.reference import compare_image_with_reference, format_reference_results
    from bliss.predict.predictor import build_predictor
    from bliss.protocols import ImageSource
    from bliss.surveys.sdss.photoobj import find_photoobj, photo_flag, read_photoobj

    spec = cfg.evaluate
    if spec.reference != "photoobj":
        raise BlissConfigError(
            f"evaluate.reference={spec.reference!r}; expected null (simulated truth, "
            "evaluate.input / evaluate.truth) or 'photoobj' (a real SDSS frame)."
        )
    if "field" not in cfg.survey:
        raise BlissConfigError(
            f"evaluate.reference=photoobj needs a survey that reads SDSS frames, got "
            f"survey={cfg.survey.name}; add survey=sdss_frames survey.data_dir=DIR "
            "survey.run=R survey.camcol=C survey.field=F."
        )
    options = spec.photoobj
    encoder, model, survey = load_model_and_survey(spec.checkpoint, cfg.survey)
    if not isinstance(survey, ImageSource):
        raise BlissConfigError(
            f"evaluate.reference=photoobj needs a survey that reads its own frames; "
            f"survey={cfg.survey.name} does not."
        )
    path = options.path or find_photoobj(survey.data_dir, survey.run, survey.camcol, survey.field)
    image = survey.load_image(tuple(encoder.bands))
    reference = read_photoobj(
        path,
        band=survey.reference_band,
        shape=image.images.shape[1:],
        galaxy_flux=options.galaxy_flux,
        ignore_flags=list(options.ignore_flags),
        ids=(survey.run, survey.camcol, survey.field),
    )
    reference["maybe_cr"] = photo_flag(reference, "MAYBE_CR")
    predictor = build_predictor(
        predictor_settings(cfg.predict), encoder, model, progress=False, survey=survey
    )
    results = compare_image_with_reference(
        predictor,
        survey,
        image,
        reference,
        threshold=spec.threshold,
        match_dist_px=spec.match_dist_px,
        mag_bins=list(options.mag_bins),
        output=Path(spec.output),
        plot_box_px=options.plot_box_px,
        n_examples=options.n_examples,
        faint_mag=options.faint_mag,
        seed=cfg.seed,
    )
    print(f"{image.path} vs {path} (match within {spec.match_dist_px} px):")
    print(format_reference_results(results))
    print(f"-> {spec.output}")
    return results
