"""``bliss mode=predict``: a FITS image (or many, or SDSS fields) in, catalogs (and PNGs) out."""

import glob
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bliss.errors import BlissConfigError, BlissIOError

if TYPE_CHECKING:  # the model's imports take seconds: a typo is reported before them
    from bliss.encoder.encoder import Encoder
    from bliss.predict.regional import CrowdedModel
    from bliss.protocols import ModelConditions, Survey

__all__ = ["catalog_fingerprint", "run_predict"]

#: keys that say where results go or how fast they come, not what they are
_NOT_IN_FINGERPRINT = {
    "predict": {
        "input",
        "output",
        "plot",
        "check_images",
        "device",
        "batch_chunks",
        "format",
        "checkpoint",
    },
    "survey": {"run", "camcol", "field", "fields", "data_dir"},
}


def catalog_fingerprint(cfg: DictConfig, checkpoint_hash: str) -> str:
    """A short hash of everything that determines a catalog's rows: model, predict and survey."""
    recipe: dict[str, Any] = {"checkpoint": checkpoint_hash}
    for section, skip in _NOT_IN_FINGERPRINT.items():
        values = OmegaConf.to_container(cfg[section], resolve=True)
        recipe[section] = {k: v for k, v in values.items() if k not in skip}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _input_spec(cfg: DictConfig) -> Any:
    spec = cfg.predict.input
    return OmegaConf.to_container(spec) if OmegaConf.is_list(spec) else spec


def _check_single_input(cfg: DictConfig) -> None:
    """A single input file that does not exist, reported before the model loads.

    Raises:
        BlissIOError: ``predict.input`` names one file (not a glob or list), the survey does not
            find its own images, and the file does not exist.
    """
    spec = _input_spec(cfg)
    own_images = "field" in cfg.survey  # e.g. sdss_frames: run / camcol / field
    if own_images or not isinstance(spec, str) or glob.has_magic(spec):
        return
    if not Path(spec).is_file():
        raise BlissIOError(
            f"predict.input={spec} does not exist; give a FITS file, a list, or a glob such as "
            "'data/*.fits'."
        )


def _check_keys(cfg: DictConfig) -> None:
    """The ``predict`` keys judged from their values alone, before the model loads.

    Raises:
        BlissConfigError: a count is negative, the threshold is not a probability, a switch is
            not a boolean, or ``predict.sky`` is unknown.
    """
    spec = cfg.predict
    for key in ("n_samples", "marginal_samples"):
        if spec.get(key, 0) < 0:
            raise BlissConfigError(f"predict.{key}={spec[key]}; expected an integer >= 0.")
    for key in (
        "plot",
        "check_images",
        "psf_photometry",
        "galaxy_photometry",
        "confusion_noise",
    ):
        if not isinstance(spec.get(key, False), bool):
            raise BlissConfigError(f"predict.{key}={spec[key]!r}; expected true or false.")
    from bliss.predict.predictor import check_threshold
    from bliss.surveys.fits_reader import check_sky_convention

    check_threshold(spec.threshold)
    check_sky_convention(spec.sky)


def _check_outputs(cfg: DictConfig, several: bool) -> None:
    """The output of one input must be a catalog file; several need a known ``predict.format``.

    Raises:
        BlissConfigError: the extension or format is not one of the catalog formats.
    """
    from bliss.catalog.io import CATALOG_FORMATS, table_format

    spec = cfg.predict
    if not several:
        table_format(spec.output)
    elif spec.format not in CATALOG_FORMATS:
        raise BlissConfigError(
            f"predict.format={spec.format!r}; expected one of {sorted(CATALOG_FORMATS)}."
        )


def run_predict(cfg: DictConfig) -> dict[str, Any]:
    """Run ``mode=predict``: one input, or several into the ``predict.output`` directory.

    Every input, output and key that can be checked without the model is checked before it
    loads: a typo costs a second, not an inference.

    Raises:
        BlissConfigError: a ``predict`` key is invalid, the survey's bands differ from the
            model's, or (several inputs) ``predict.output`` names a file or ``predict.format``
            is unknown.
        BlissIOError: the input or a checkpoint does not exist.
    """
    spec = cfg.predict
    _check_single_input(cfg)
    _check_keys(cfg)
    import torch

    from bliss.cli.model import (
        crowding_settings,
        load_crowded_model,
        load_model_and_survey,
        predictor_settings,
    )
    from bliss.encoder.checkpoint import require_checkpoint_file
    from bliss.predict.inputs import has_several_inputs
    from bliss.predict.provenance import table_meta

    several = has_several_inputs(_input_spec(cfg), instantiate(cfg.survey))
    _check_outputs(cfg, several)
    settings = predictor_settings(spec)
    crowding_settings(spec)
    for key in ("checkpoint", "crowded.checkpoint"):
        path = OmegaConf.select(spec, key)
        if path is not None:
            require_checkpoint_file(path, f"predict.{key}")
    encoder, model, survey = load_model_and_survey(
        spec.checkpoint, cfg.survey, spec.get("shipped_models")
    )
    crowded = load_crowded_model(spec, cfg.survey)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    meta = table_meta(spec.checkpoint, config_yaml)
    if several:
        return _predict_many(cfg, encoder, model, survey, meta, config_yaml, crowded)
    from bliss.atomic import atomic_path, remove_stale_temporaries
    from bliss.predict.cataloging import predict_file
    from bliss.predict.predictor import build_predictor

    output = Path(spec.output)
    # what a killed run of this output left: its catalog's, samples' and PNGs' temporary files
    remove_stale_temporaries(output.parent, stem=output.stem)
    predictor = build_predictor(settings, encoder, model, survey=survey)
    if crowded is not None:
        from bliss.predict.regional import build_regional

        predictor = build_regional(predictor, crowded, settings)
    torch.manual_seed(cfg.seed)  # the posterior samples are reproducible from the seed
    try:
        result = predict_file(
            predictor,
            survey,
            spec.input,
            spec.output,
            threshold=spec.threshold,
            n_samples=spec.n_samples,
            plot=spec.plot,
            meta=meta,
            sky=spec.sky,
            check_images=spec.check_images,
            marginal_samples=spec.get("marginal_samples", 0),
        )
        with atomic_path(output.with_suffix(".config.yaml")) as tmp:
            tmp.write_text(config_yaml)
    except BlissIOError:
        raise
    except OSError as err:  # a full disk, a read-only or vanished directory
        raise BlissIOError(
            f"writing the outputs of predict.input={spec.input} to {output.parent} failed "
            f"({err}); files already there are unchanged (each is written whole or not at all). "
            "Free some space or choose another predict.output, then re-run."
        ) from err
    print(f"{len(result['table'])} sources -> {spec.output}")
    return result


def _predict_many(
    cfg: DictConfig,
    encoder: "Encoder",
    model: "ModelConditions",
    survey: "Survey",
    meta: dict[str, Any],
    config_yaml: str,
    crowded: "CrowdedModel | None" = None,
) -> dict[str, Any]:
    """Several inputs, shared by the ranks of a Lightning predict loop (:mod:`bliss.predict.loop`)."""
    from bliss.atomic import atomic_path
    from bliss.catalog.io import CATALOG_FORMATS
    from bliss.cli.model import predictor_settings
    from bliss.predict.inputs import resolve_inputs
    from bliss.predict.loop import CatalogSettings, InputCataloger, predict_inputs

    spec = cfg.predict
    settings = CatalogSettings(
        Path(spec.output),
        CATALOG_FORMATS[spec.format][0],
        spec.threshold,
        spec.n_samples,
        spec.plot,
        meta,
        catalog_fingerprint(cfg, meta["CKPTHASH"]),
        seed=cfg.seed,
        sky=spec.sky,
        check_images=spec.check_images,
        marginal_samples=spec.get("marginal_samples", 0),
    )
    inputs = resolve_inputs(_input_spec(cfg), survey)
    try:
        with atomic_path(settings.output_dir / f"config-{meta['CFGHASH']}.yaml") as tmp:
            tmp.write_text(config_yaml)
    except OSError as err:
        raise BlissIOError(
            f"cannot write into predict.output={settings.output_dir} ({err}); free some space "
            "or choose another directory."
        ) from err
    module = InputCataloger(
        encoder, model, predictor_settings(spec), inputs, survey, settings, crowded=crowded
    )
    overrides: dict[str, Any] = {
        "logger": False,
        "enable_checkpointing": False,
        "use_distributed_sampler": True,
    }
    device = str(spec.device)
    if device != "auto":
        overrides["accelerator"] = "cpu" if device == "cpu" else "gpu"
    return predict_inputs(instantiate(cfg.trainer, **overrides), module)
