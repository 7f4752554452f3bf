"""``bliss mode=generate``: simulate shards into ``paths.cached_data``."""

from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bliss.errors import BlissConfigError, BlissIOError

__all__ = ["build_simulator", "run_generate"]


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
        lensing=None if sim.get("lensing") is None else instantiate(sim.lensing),
        ellipticity=bool(sim.get("ellipticity", False)),
    )


def _read_psf_image(path: Path, band: str) -> np.ndarray:
    from astropy.io import fits

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
