"""Generation throughput of both renderers: images/s and sources/s of `bliss mode=generate`.

Usage: python benchmarks/bench_generate.py [--renderers galsim torch] [--image-sizes 80 256]
       [--noise poisson gaussian] [--images 200] [--workers 1 2]

Default `sdss` preset and prior (~12 sources per 256 x 256 image), 5 bands, shards of 50 images
written to a temporary directory; `simulator=galsim` (the reference) and `simulator=torch` on the
CPU, and `simulator=torch simulator.renderer.device=cuda` (in the main process) when CUDA is
available; `simulator.noise` as given (Poisson by default). `--workers 0` simulates in the row's
own process with torch's default thread count; workers >= 1 are `generate.num_workers` processes
of one thread each. Each row runs in a fresh process, so its peak RSS is its own. Other jobs on
the machine slow every row: the last column is the 1-minute load average when the row ended, and
images/CPU-s (images per second of CPU time of the row's process and its workers) is what each
free core would make.
Compare: the reference `bliss-toolkit` 0.4.2 makes 3.8 images/s per process at 1.1 GB and
1.68 MB on disk per image on a 2-core machine.
"""

import argparse
import itertools
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import galsim
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from bliss.cli.generate import build_simulator
from bliss.data.generate import generate_shards


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its joined children."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def run(
    renderer: str,
    device: str,
    image_size: int,
    noise: str,
    n_images: int,
    workers: int,
    per_shard: int,
) -> dict:
    overrides = [
        "mode=generate",
        f"simulator={renderer}",
        f"simulator.image_size={image_size}",
        f"simulator.noise={noise}",
    ]
    if renderer == "torch":
        overrides.append(f"simulator.renderer.device={device}")
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "paths.run_dir=."])
    simulator = build_simulator(cfg)
    simulator.simulate(2, seed=0)  # warm-up: tables, FFT plans, CUDA context
    recipe = OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, ["survey", "prior", "simulator"]), resolve=True
    )
    with tempfile.TemporaryDirectory() as directory:
        cpu_start = _cpu_seconds()
        start = time.perf_counter()
        manifest = generate_shards(
            simulator,
            Path(directory),
            seed=1,
            n_shards=n_images // per_shard,
            images_per_shard=per_shard,
            num_workers=workers,
            recipe=recipe,
            progress=False,
        )
        elapsed = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu_start  # the workers' too: the pool has joined them
        n_sources = 0
        for shard in manifest["shards"]:
            payload = torch.load(Path(directory) / shard["file"], weights_only=True)
            n_sources += int(payload["catalog/n_sources"].sum())
        size = sum(s["bytes"] for s in manifest["shards"])
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    return {
        "images_per_s": manifest["n_images"] / elapsed,
        "images_per_cpu_s": manifest["n_images"] / cpu,
        "sources_per_s": n_sources / elapsed,
        "sources_per_image": n_sources / manifest["n_images"],
        "peak_rss_gb": peak / 1e6,
        "mb_per_image": size / manifest["n_images"] / 1e6,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--renderers", nargs="+", default=["galsim", "torch"])
    parser.add_argument("--image-sizes", type=int, nargs="+", default=[80, 256])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--per-shard", type=int, default=50)
    parser.add_argument("--noise", nargs="+", default=["poisson"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    print(
        f"cpu ({multiprocessing.cpu_count()} cores), "
        f"cuda: {torch.cuda.get_device_name() if cuda else 'none'}, "
        f"python={sys.version.split()[0]} torch={torch.__version__} galsim={galsim.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        "| renderer | device | workers | image px | noise | images/s | images/CPU-s | sources/s "
        "| sources/image | peak RSS GB | MB/image | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [(r, "cpu", w) for r in args.renderers for w in args.workers]
    if cuda and "torch" in args.renderers:
        rows.append(("torch", "cuda", 0))  # CUDA in the main process: no forked workers
    context = multiprocessing.get_context("spawn")
    for image_size, noise, (renderer, device, workers) in itertools.product(
        args.image_sizes, args.noise, rows
    ):
        # a fresh process per row, so that its peak RSS is its own
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            job = (renderer, device, image_size, noise, args.images, workers, args.per_shard)
            r = pool.submit(run, *job).result()
        print(
            f"| {renderer} | {device} | {workers} | {image_size} | {noise} | "
            f"{r['images_per_s']:.1f} | {r['images_per_cpu_s']:.1f} | {r['sources_per_s']:.0f} | "
            f"{r['sources_per_image']:.1f} | "
            f"{r['peak_rss_gb']:.2f} | {r['mb_per_image']:.2f} | {r['load']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
