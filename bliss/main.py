"""The ``bliss`` command: ``bliss mode=generate|train|predict|evaluate|download [overrides]``."""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bliss.errors import BlissConfigError, BlissError

__all__ = ["MODES", "build_simulator", "cli", "run"]


def build_simulator(cfg: DictConfig) -> Any:
    """The :class:`~bliss.simulator.simulate.ImageSimulator` described by ``cfg``."""
    from bliss.simulator.simulate import ImageSimulator

    survey = instantiate(cfg.survey)
    sim = cfg.simulator
    psf_images = None
    if sim.psf_images:
        psf_images = {
            band: _read_psf_image(Path(path), band) for band, path in sim.psf_images.items()
        }
    return ImageSimulator(
        survey=survey,
        prior=instantiate(cfg.prior),
        renderer=instantiate(sim.renderer),
        conditions=instantiate(sim.conditions, survey=survey),
        image_size=sim.image_size,
        noise=sim.noise,
        margin_px=sim.margin_px,
        dither_px=sim.dither_px,
        psf_images=psf_images,
    )


def _read_psf_image(path: Path, band: str) -> np.ndarray:
    from astropy.io import fits

    from bliss.errors import BlissIOError

    if path.suffix == ".psf":
        from bliss.surveys.psfex import PsfexPsf

        psf = PsfexPsf.from_file(path, band)
        return psf.image(*psf.polynomial_origin)
    try:
        image = np.load(path) if path.suffix == ".npy" else fits.getdata(path)
    except Exception as err:
        raise BlissConfigError(
            f"simulator.psf_images.{band}={path} cannot be read as a .npy or FITS image ({err})."
        ) from err
    if image is None or np.ndim(image) != 2:
        raise BlissIOError(f"simulator.psf_images.{band}={path} is not a 2-D image.")
    return np.asarray(image, dtype=np.float64)


def run_generate(cfg: DictConfig) -> dict[str, Any]:
    """Simulate shards into ``paths.cached_data`` (or merge array tasks' manifests there)."""
    from bliss.data.generate import generate_shards

    if cfg.generate.merge_only:
        from bliss.data.merge import merge_task_manifests

        manifest = merge_task_manifests(
            cfg.paths.cached_data,
            split_fractions=cfg.data.split_fractions,
            total_shards=cfg.generate.total_shards,
        )
        print(f"merged {manifest['n_shards']} shards into {cfg.paths.cached_data}/manifest.json")
        return manifest
    simulator = build_simulator(cfg)  # validates every simulator key before any work
    # resolved in the whole config: a simulator key may point at e.g. ${paths.root}
    recipe = {
        key: OmegaConf.to_container(cfg[key], resolve=True)
        for key in ("survey", "prior", "simulator")
    }
    manifest = generate_shards(
        simulator,
        Path(cfg.paths.cached_data),
        seed=cfg.seed,
        n_shards=cfg.generate.n_shards,
        images_per_shard=cfg.generate.images_per_shard,
        shard_offset=cfg.generate.shard_offset,
        total_shards=cfg.generate.total_shards,
        num_workers=cfg.generate.num_workers,
        recipe=recipe,
    )
    print(
        f"{manifest['n_shards']} shards, {manifest['n_images']} images in {cfg.paths.cached_data}"
    )
    if cfg.generate.total_shards is not None:
        print("one task of several: merge with `bliss mode=generate generate.merge_only=true`")
    return manifest


def run_train(cfg: DictConfig) -> Any:
    """Fit the encoder (see :mod:`bliss.encoder.training`)."""
    from bliss.encoder.training import train

    if cfg.train.data != "simulate":
        return train(cfg)
    from bliss.data.on_the_fly import SimulatedDataModule

    spec = cfg.train.simulate
    datamodule = SimulatedDataModule(
        build_simulator(cfg),
        cfg.data.batch_size,
        spec.batches_per_epoch,
        spec.val_batches,
        cfg.seed,
        spec.num_workers,
    )
    return train(cfg, datamodule)


def run_predict(cfg: DictConfig) -> Any:
    """Catalog a FITS image (see :mod:`bliss.predict.run`)."""
    from bliss.predict.run import predict_from_config

    return predict_from_config(cfg)


def run_evaluate(cfg: DictConfig) -> Any:
    """Compare bliss and the ``sep`` baseline against truth (see :mod:`bliss.predict.evaluate`)."""
    from bliss.predict.evaluate import evaluate_from_config

    return evaluate_from_config(cfg)


def run_download(cfg: DictConfig) -> list[Path]:
    """Fetch the files of ``survey=sdss_frames``'s field(s) into ``survey.data_dir``."""
    from tqdm import tqdm

    from bliss.surveys.sdss.download import download_sdss_field
    from bliss.surveys.sdss.survey import SdssFrameSurvey

    survey = instantiate(cfg.survey)
    if not isinstance(survey, SdssFrameSurvey):
        raise BlissConfigError(
            f"mode=download fetches SDSS fields; survey={cfg.survey.name} is not one. Use "
            "survey=sdss_frames survey.data_dir=DIR survey.run=R survey.camcol=C survey.field=F."
        )
    fields = survey.fields or [(survey.run, survey.camcol, survey.field)]
    paths = []
    for ids in tqdm(fields, desc="download", unit="field", disable=len(fields) < 2):
        paths += download_sdss_field(
            *ids, survey.data_dir, bands=tuple(survey.bands), **cfg.download
        )
    print(f"{len(paths)} files of {len(fields)} field(s) in {survey.data_dir}")
    return paths


MODES: dict[str, Callable[[DictConfig], Any]] = {
    "generate": run_generate,
    "train": run_train,
    "predict": run_predict,
    "evaluate": run_evaluate,
    "download": run_download,
}


def run(cfg: DictConfig) -> Any:
    """Dispatch on ``cfg.mode``.

    Raises:
        BlissConfigError: ``mode`` is not one of :data:`MODES`.
    """
    if OmegaConf.is_missing(cfg, "mode"):
        raise BlissConfigError(
            f"mode is not set; expected one of {sorted(MODES)}, e.g. `bliss mode=predict`."
        )
    mode = cfg.mode
    if mode not in MODES:
        raise BlissConfigError(
            f"mode={mode!r} is not a bliss mode; expected one of {sorted(MODES)}, e.g. "
            "`bliss mode=generate`."
        )
    return MODES[mode](cfg)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def _hydra_entry(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except BlissError as err:  # a user-facing problem: the message says what to fix
        print(f"bliss: error: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)


def cli() -> None:
    """Console entry point."""
    _hydra_entry()


if __name__ == "__main__":
    cli()
