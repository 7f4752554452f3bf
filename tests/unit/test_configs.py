"""Every shipped config composes and builds; presets hold the documented numbers."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

import bliss
from bliss.cli.generate import build_simulator
from bliss.cli.main import MODES, run
from bliss.errors import BlissConfigError
from tests.conftest import compose_config

CONF = Path(bliss.__file__).parent / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SURVEYS = sorted(p.stem for p in (CONF / "survey").glob("*.yaml"))
LAUNCHERS = sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml"))
YAML_FILES = sorted(CONF.rglob("*.yaml"))


def test_the_globs_found_the_presets() -> None:
    assert {"debug", "sdss_generalist"} <= set(EXPERIMENTS)
    assert {"sdss", "des", "lsst"} <= set(SURVEYS)
    assert "slurm" in LAUNCHERS
    assert len(YAML_FILES) > 15


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_experiment_composes_and_builds(experiment: str, mode: str, tmp_path: Path) -> None:
    overrides = [f"mode={mode}", f"experiment={experiment}"]
    if experiment == "sdss_real":  # the committed cut-outs of one of its real fields
        overrides += [
            f"simulator.conditions.observed.data_dir={Path(__file__).parents[1] / 'data' / 'sdss'}",
            "simulator.conditions.observed.fields=[[94,1,12]]",
            "simulator.conditions.observed.grid=1",
        ]
    cfg = compose_config(overrides, tmp_path)
    assert cfg.mode == mode
    shapes = cfg.prior.get("galaxy_shape_catalog")
    if (
        shapes is not None
        and shapes.get("path") is None
        and importlib.util.find_spec("fpfs") is None
    ):
        pytest.skip(f"experiment={experiment} reads the COSMOS catalog of fpfs, not installed")
    prior = instantiate(cfg.prior)
    assert tuple(prior.bands) == tuple(cfg.survey.bands)
    encoder = instantiate(cfg.encoder)
    assert encoder.bands == tuple(cfg.survey.bands)
    assert encoder.posterior.max_sources == cfg.prior.max_sources
    simulator = build_simulator(cfg)
    assert simulator.image_size == cfg.simulator.image_size
    # the encoder's tiles are the prior's tiles
    assert encoder.tile_slen == prior.tile_slen


@pytest.mark.parametrize("survey", SURVEYS)
def test_survey_preset_builds_a_simulator(survey: str, tmp_path: Path) -> None:
    cfg = compose_config(
        ["mode=generate", f"survey={survey}", "simulator.image_size=16", "simulator.margin_px=0"],
        tmp_path,
    )
    simulator = build_simulator(cfg)
    assert simulator.survey.name == survey
    n_bands = len(cfg.survey.bands)
    assert simulator.survey.n_bands == n_bands
    simulated = simulator.simulate(1, seed=0)
    assert simulated["images"].shape == (1, n_bands, 16, 16)
    assert torch.isfinite(simulated["images"]).all()
    encoder = instantiate(cfg.encoder)
    assert encoder.normalizer.n_bands == n_bands
    assert encoder.posterior.slot_factors["fluxes"].dim == n_bands


def test_sdss_preset_matches_the_table(tmp_path: Path) -> None:
    survey = instantiate(compose_config(["mode=generate", "survey=sdss"], tmp_path).survey)
    table = {  # band: (FWHM arcsec, sky electrons / px, MAGZERO)
        "u": (1.50, 40, 28.01),
        "g": (1.40, 254, 29.82),
        "r": (1.30, 620, 29.89),
        "i": (1.25, 977, 29.69),
        "z": (1.25, 639, 27.93),
    }
    assert survey.bands == tuple(table)
    assert survey.reference_band == "r"
    assert survey.pixel_scale_arcsec == 0.396
    assert survey.psf_beta == 3.5
    for band, (fwhm, sky, magzero) in table.items():
        assert survey.psf_fwhm_arcsec(band) == fwhm, band
        assert survey.sky_electrons(band) == sky, band
        assert survey.magzero(band) == magzero, band


def _string_values(node: object, path: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "defaults":  # Hydra group paths such as `override /debug`, not files
                continue
            yield from _string_values(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _string_values(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_no_absolute_paths(path: Path) -> None:
    content = yaml.safe_load(path.read_text()) or {}
    absolute = [
        (key, value)
        for key, value in _string_values(content)
        if re.match(r"^(/|~/|[A-Za-z]:\\)", value)
    ]
    assert not absolute, f"{path.relative_to(CONF)}: absolute paths {absolute}"


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="hydra-submitit-launcher is not installed",
)
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_slurm_launcher_composes(launcher: str) -> None:
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["mode=train", f"hydra/launcher={launcher}"],
            return_hydra_config=True,
        )
    settings = cfg.hydra.launcher
    assert settings._target_.endswith("SlurmLauncher")
    assert settings.timeout_min > 0 and settings.mem_gb > 0
    assert settings.tasks_per_node >= 1
    assert settings.gpus_per_node == (0 if launcher.endswith("cpu") else 1)


def test_unknown_mode_lists_the_valid_ones(tmp_path: Path) -> None:
    cfg = compose_config(["mode=fit"], tmp_path)
    with pytest.raises(BlissConfigError) as info:
        run(cfg)
    for mode in MODES:
        assert mode in str(info.value)
