"""Load the model, build the survey, check that their bands agree: once, for predict and evaluate."""

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.utils import instantiate
from omegaconf import DictConfig

from bliss.encoder.encoder import Encoder
from bliss.errors import BlissConfigError
from bliss.predict.density import DensitySettings
from bliss.predict.model import model_conditions
from bliss.predict.predictor import PredictorSettings
from bliss.protocols import ModelConditions, Survey

if TYPE_CHECKING:
    from bliss.predict.crowding import CrowdingSettings
    from bliss.predict.regional import CrowdedModel

__all__ = [
    "crowding_settings",
    "load_crowded_model",
    "load_model_and_survey",
    "predictor_settings",
]


def load_model_and_survey(
    checkpoint: str | Path,
    survey_config: DictConfig,
    shipped_models: Mapping[str, str] | None = None,
) -> tuple[Encoder, ModelConditions, Survey]:
    """The checkpoint's encoder, what it assumes of its images, and the survey adapted to it.

    ``shipped_models`` (``predict.shipped_models``: survey name -> file in ``bliss/models``)
    lets a band mismatch say which surveys have a shipped model.

    Raises:
        BlissConfigError: the survey's bands differ from the model's (names and order).
    """
    from bliss.encoder.checkpoint import load_encoder

    encoder, model_config = load_encoder(checkpoint)
    survey = instantiate(survey_config)
    if tuple(encoder.bands) != tuple(survey.bands):
        hint = "pick the matching survey or checkpoint."
        if shipped_models is not None and survey_config.name not in shipped_models:
            listed = ", ".join(f"survey={name} ({file})" for name, file in shipped_models.items())
            hint = (
                f"no model ships for survey={survey_config.name} (models ship for survey=sdss "
                f"(sdss_generalist.ckpt), {listed}); pass predict.checkpoint=PATH to a model "
                f"trained for its bands (bliss mode=train survey={survey_config.name} ...)."
            )
        raise BlissConfigError(
            f"checkpoint {checkpoint} is for bands {list(encoder.bands)} but "
            f"survey={survey_config.name} has {list(survey.bands)}; {hint}"
        )
    model = model_conditions(tuple(encoder.bands), model_config)
    return encoder, model, survey.for_model(model)


def predictor_settings(spec: DictConfig) -> PredictorSettings:
    """The ``predict`` section's window keys."""
    return PredictorSettings(
        window_px=spec.window_px,
        margin_px=spec.margin_px,
        chunk_px=spec.chunk_px,
        batch_chunks=spec.batch_chunks,
        device=spec.device,
        precision=spec.get("precision", "32-true"),
        psf_photometry=spec.get("psf_photometry", True),
        galaxy_photometry=spec.get("galaxy_photometry", True),
        confusion_noise=spec.get("confusion_noise", True),
        saturated_stars=spec.get("saturated_stars", True),
        density=density_settings(spec.get("density", {})),
        region_turns=int(spec.get("region_turns", 8)),
    )


def density_settings(spec: DictConfig | dict | None) -> DensitySettings | None:
    """The ``predict.density`` keys, or None when set to null (the training prior everywhere)."""
    if spec is None:
        return None
    default = DensitySettings()
    values = {}
    for field in dataclasses.fields(DensitySettings):
        value = getattr(default, field.name)  # a missing key keeps it; its type casts the key
        values[field.name] = type(value)(spec.get(field.name, value))
    return DensitySettings(**values)


def crowding_settings(spec: DictConfig) -> "CrowdingSettings | None":
    """The ``predict.crowded`` block search, or None when no crowded model is set.

    Raises:
        BlissConfigError: a threshold or size is not positive, or ``context_px`` is negative.
    """
    crowded = spec.get("crowded")
    if crowded is None or crowded.checkpoint is None:
        return None
    from bliss.predict.crowding import CrowdingSettings

    # the settings check themselves: a bad key is reported before the model loads
    settings = CrowdingSettings(
        int(crowded.block_px), float(crowded.min_peak_density), float(crowded.min_median_snr)
    )
    if crowded.context_px < 0:
        raise BlissConfigError(
            f"predict.crowded.context_px={crowded.context_px}; expected pixels >= 0."
        )
    return settings


def load_crowded_model(spec: DictConfig, survey_config: DictConfig) -> "CrowdedModel | None":
    """The ``predict.crowded`` model, or None when ``predict.crowded.checkpoint`` is null.

    Raises:
        BlissConfigError: its bands differ from the survey's, or a setting is invalid
            (:func:`crowding_settings`).
    """
    settings = crowding_settings(spec)
    if settings is None:
        return None
    from bliss.predict.regional import CrowdedModel

    crowded = spec.crowded
    encoder, model, _ = load_model_and_survey(crowded.checkpoint, survey_config)
    window = crowded.get("window_px", "auto")
    return CrowdedModel(
        encoder,
        model,
        Path(crowded.checkpoint).name,
        settings,
        int(crowded.context_px),
        window if window == "auto" else int(window),
        bool(crowded.get("psf_photometry", False)),
    )
