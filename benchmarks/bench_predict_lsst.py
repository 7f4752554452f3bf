"""The whole `bliss mode=predict survey=lsst_coadd` (or `survey=lsst`) command on a DC2-like image.

Usage: python benchmarks/bench_predict_lsst.py [--size 4096] [--survey lsst_coadd] [--work DIR]
       [--rows default network] [overrides ...]

One field of ``--size`` x ``--size`` px x 6 bands (ugrizy, 0.2"/px) is simulated from
``prior=dc2_like`` at the survey's depth (``--survey lsst_coadd``, the ten-year coadd: ~100
galaxies per arcmin², ~19 000 sources in 4096² px, most detectable; ``--survey lsst``, one 30 s
visit: the same sky, about a quarter of it above the visit's depth) and kept in ``--work`` for
later runs. Each row is a fresh ``bliss`` process timed from the outside (imports, reading the
FITS file, the survey's shipped model, ``lsst_dc2`` or ``lsst_visit``, all outputs); peak RSS is
the child's ``VmHWM``. Rows:

- ``default``: the shipped defaults (PSF fits of stars, model fits of bright galaxies);
- ``network``: ``predict.psf_photometry=false`` (the network's fluxes alone);
- ``no_galaxy_fits``: ``predict.galaxy_photometry=false`` (star PSF fits only).

Extra arguments are Hydra overrides passed to every run. Target (issue 15): the 4096² image
within 8 GiB on 2 CPU cores; the time is reported.
"""

import argparse
import os
import sys
import time
from pathlib import Path

from bench_startup import timed  # a fresh bliss process: seconds, peak RSS, last line

ROWS = {
    "default": [],
    "network": ["predict.psf_photometry=false"],
    "no_galaxy_fits": ["predict.galaxy_photometry=false"],
}
SEED = 4096


def simulate(size: int, survey: str, work: Path) -> Path:
    """The simulated field (kept in ``work`` and reused), as the predict input FITS."""
    stem = f"{survey}_{size}"
    image = work / f"{stem}.fits"
    if image.exists():
        return image
    from hydra import compose, initialize_config_module

    from bliss.cli.generate import build_simulator
    from bliss.simulator.field import write_simulated_field

    overrides = [
        "mode=simulate",
        f"survey={survey}",
        "prior=dc2_like",
        f"simulator.image_size={size}",
        "paths.run_dir=.",
    ]
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    work.mkdir(parents=True, exist_ok=True)
    partial = work / f"{stem}.partial.fits"  # renamed once complete
    start = time.perf_counter()
    write_simulated_field(build_simulator(cfg), SEED, partial, work / f"truth_{stem}.fits")
    partial.rename(image)
    print(f"simulated {size} x {size} px in {time.perf_counter() - start:.0f} s", flush=True)
    return image


def run_once(image: Path, survey: str, overrides: list[str], out: Path) -> tuple[float, float, str]:
    """One `bliss mode=predict survey=<survey>`: (seconds, peak GB, its last stdout line)."""
    return timed(
        [
            "mode=predict",
            f"survey={survey}",
            f"predict.input={image}",
            f"predict.output={out / 'catalog.fits'}",
            f"hydra.run.dir={out / 'hydra'}",
            *overrides,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="pixels on a side")
    parser.add_argument("--survey", default="lsst_coadd", choices=["lsst_coadd", "lsst"])
    parser.add_argument("--work", type=Path, default=Path("data/bench_lsst"))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args, overrides = parser.parse_known_args()
    import torch

    image = simulate(args.size, args.survey, args.work)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{args.size} x {args.size} px x 6 bands, survey={args.survey}")
    print("| run | seconds | peak RSS GB | output |")
    print("| --- | --- | --- | --- |")
    for row in args.rows:
        out = args.work / f"out_{args.survey}_{args.size}_{row}"
        seconds, peak, last = run_once(image, args.survey, [*ROWS[row], *overrides], out)
        print(f"| {row} | {seconds:.1f} | {peak:.2f} | {last} |", flush=True)


if __name__ == "__main__":
    main()
