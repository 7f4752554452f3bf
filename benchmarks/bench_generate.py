"""Generation throughput: images/s and sources/s of `bliss mode=generate`, peak memory, bytes per image.

Usage: python benchmarks/bench_generate.py [--image-size 256] [--images 200] [--workers 1 2]

Default `sdss` preset and prior (~12 sources per 256 x 256 image), 5 bands, Poisson noise, shards
of 50 images written to a temporary directory. Compare: the reference `bliss-toolkit` 0.4.2 makes
3.8 images/s per process at 1.1 GB and 1.68 MB on disk per image on a 2-core machine.
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import galsim
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from bliss.data.generate import generate_shards
from bliss.main import build_simulator


def run(image_size: int, n_images: int, workers: int, per_shard: int) -> dict:
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["mode=generate", f"simulator.image_size={image_size}", "paths.run_dir=."],
        )
    simulator = build_simulator(cfg)
    recipe = OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, ["survey", "prior", "simulator"]), resolve=True
    )
    with tempfile.TemporaryDirectory() as directory:
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
        "sources_per_s": n_sources / elapsed,
        "sources_per_image": n_sources / manifest["n_images"],
        "peak_rss_gb": peak / 1e6,
        "mb_per_image": size / manifest["n_images"] / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--per-shard", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(
        f"cpu, python={sys.version.split()[0]} torch={torch.__version__} galsim={galsim.__version__}"
    )
    print(
        "| workers | image px | images/s | sources/s | sources/image | peak RSS GB | MB/image "
        "| x reference (3.8 img/s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for workers in args.workers:
        r = run(args.image_size, args.images, workers, args.per_shard)
        print(
            f"| {workers} | {args.image_size} | {r['images_per_s']:.1f} | {r['sources_per_s']:.0f} | "
            f"{r['sources_per_image']:.1f} | {r['peak_rss_gb']:.2f} | {r['mb_per_image']:.2f} | "
            f"{r['images_per_s'] / 3.8:.1f} |"
        )


if __name__ == "__main__":
    main()
