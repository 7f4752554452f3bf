"""The whole `bliss mode=predict survey=lsst_coadd` command on a simulated DC2-like LSST image.

Usage: python benchmarks/bench_predict_lsst.py [--size 4096] [--work DIR] [--rows default network]
       [overrides ...]

One field of ``--size`` x ``--size`` px x 6 bands (ugrizy, 0.2"/px) is simulated from
``prior=dc2_like`` at the ten-year coadd's depth (``survey=lsst_coadd``; ~100 galaxies per
arcmin², so ~19 000 sources in 4096² px) and kept in ``--work`` for later runs. Each row is a fresh
``bliss`` process timed from the outside (imports, reading the FITS file, the shipped
``lsst_dc2`` model, all outputs); peak RSS is the child's ``VmHWM``. Rows:

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


def simulate(size: int, work: Path) -> Path:
    """The simulated field (kept in ``work`` and reused), as the predict input FITS."""
    image = work / f"lsst_{size}.fits"
    if image.exists():
        return image
    from hydra import compose, initialize_config_module

    from bliss.cli.generate import build_simulator
    from bliss.simulator.field import write_simulated_field

    overrides = [
        "mode=simulate",
        "survey=lsst_coadd",
        "prior=dc2_like",
        f"simulator.image_size={size}",
        "paths.run_dir=.",
    ]
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    work.mkdir(parents=True, exist_ok=True)
    partial = work / f"lsst_{size}.partial.fits"  # renamed once complete
    start = time.perf_counter()
    write_simulated_field(build_simulator(cfg), SEED, partial, work / f"truth_{size}.fits")
    partial.rename(image)
    print(f"simulated {size} x {size} px in {time.perf_counter() - start:.0f} s", flush=True)
    return image


def run_once(image: Path, overrides: list[str], out: Path) -> tuple[float, float, str]:
    """One `bliss mode=predict survey=lsst_coadd`: (seconds, peak GB, its last stdout line)."""
    return timed(
        [
            "mode=predict",
            "survey=lsst_coadd",
            f"predict.input={image}",
            f"predict.output={out / 'catalog.fits'}",
            f"hydra.run.dir={out / 'hydra'}",
            *overrides,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="pixels on a side")
    parser.add_argument("--work", type=Path, default=Path("data/bench_lsst"))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args, overrides = parser.parse_known_args()
    import torch

    image = simulate(args.size, args.work)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{args.size} x {args.size} px x 6 bands")
    print("| run | seconds | peak RSS GB | output |")
    print("| --- | --- | --- | --- |")
    for row in args.rows:
        out = args.work / f"out_{args.size}_{row}"
        seconds, peak, last = run_once(image, [*ROWS[row], *overrides], out)
        print(f"| {row} | {seconds:.1f} | {peak:.2f} | {last} |", flush=True)


if __name__ == "__main__":
    main()
