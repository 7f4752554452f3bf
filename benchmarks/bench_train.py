"""Training throughput and peak memory of the default encoder.

Usage: python benchmarks/bench_train.py [--image-size 256] [--batch-size 16] [--steps 5] [overrides...]
Prints images/s, peak RSS and the parameter count, with the device and versions.
"""

import argparse
import resource
import sys
import time

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "mode=train",
                f"simulator.image_size={args.image_size}",
                "paths.run_dir=/tmp",
                *args.overrides,
            ],
        )
    from bliss.main import build_simulator

    simulator = build_simulator(cfg)
    batch = simulator.simulate(args.batch_size, seed=0)
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    inputs.update({f"catalog/{k}": v for k, v in batch["catalog"].items()})
    inputs = {k: v.to(args.device) for k, v in inputs.items()}
    encoder = instantiate(cfg.encoder).to(args.device)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-3)
    n_params = sum(p.numel() for p in encoder.parameters())

    def step() -> None:
        optimizer.zero_grad()
        encoder.nll(inputs).backward()
        optimizer.step()

    step()  # warm-up
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if args.device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(
        f"device={args.device} torch={torch.__version__} python={sys.version.split()[0]} "
        f"threads={torch.get_num_threads()}"
    )
    print("| image px | batch | params | images/s | s/step | peak RSS GB |")
    print(
        f"| {args.image_size} | {args.batch_size} | {n_params / 1e6:.2f} M | "
        f"{args.steps * args.batch_size / elapsed:.2f} | {elapsed / args.steps:.2f} | {peak_gb:.2f} |"
    )


if __name__ == "__main__":
    main()
