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


def training_setup(image_size: int, batch_size: int, device: str, overrides: list[str]) -> tuple:
    """The composed config, an encoder, one simulated batch and the step function to time.

    ``trainer.precision`` is honoured as Lightning would: ``bf16-mixed`` runs the forward pass
    under bfloat16 autocast (parameters, gradients and optimizer state stay float32).

    Returns:
        ``(cfg, encoder, inputs, step)``; ``step()`` is one AdamW step on the batch.
    """
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "mode=train",
                f"simulator.image_size={image_size}",
                "paths.run_dir=/tmp",
                *overrides,
            ],
        )
    from bliss.cli.generate import build_simulator

    batch = build_simulator(cfg).simulate(batch_size, seed=0)
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    inputs.update({f"catalog/{k}": v for k, v in batch["catalog"].items()})
    inputs = {k: v.to(device) for k, v in inputs.items()}
    encoder = instantiate(cfg.encoder).to(device)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-3)
    precision = str(cfg.trainer.precision)
    if precision not in ("32-true", "32", "bf16-mixed"):
        raise SystemExit(
            f"trainer.precision={precision!r}; this benchmark runs 32-true or bf16-mixed."
        )
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def step() -> None:
        optimizer.zero_grad()
        with autocast:
            loss = encoder.nll(inputs)
        loss.backward()
        optimizer.step()

    return cfg, encoder, inputs, step


def measure(
    image_size: int,
    batch_size: int,
    steps: int,
    device: str,
    overrides: list[str],
    count_flops: bool = False,
) -> dict:
    """Time `steps` AdamW steps (after one warm-up) on one simulated batch (:func:`training_setup`).

    Args:
        count_flops: also count the floating-point operations of one step (forward and
            backward; convolutions and matrix products, as `torch.utils.flop_counter` counts
            them) in an extra, untimed step. Not with ``encoder.compile_features=true``, whose
            compiled kernels the counter cannot see.

    Returns:
        ``images_per_s``, ``images_per_cpu_s`` (per second of this process's CPU time, all
        threads), ``s_per_step``, ``params`` (encoder parameter count), ``precision``,
        ``peak_rss_gb``, ``peak_gpu_gb`` on CUDA, and ``flops_per_step`` when counted.
    """
    cfg, encoder, _, step = training_setup(image_size, batch_size, device, overrides)
    n_params = sum(p.numel() for p in encoder.parameters())
    precision = str(cfg.trainer.precision)
    step()  # warm-up
    flops = None
    if count_flops and not cfg.encoder.get("compile_features"):
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "images_per_s": steps * batch_size / elapsed,
        "images_per_cpu_s": steps * batch_size / cpu,  # less sensitive to other jobs
        "s_per_step": elapsed / steps,
        "params": n_params,
        "precision": precision,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None,
        "flops_per_step": flops,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    r = measure(args.image_size, args.batch_size, args.steps, args.device, args.overrides)
    print(
        f"device={args.device} torch={torch.__version__} python={sys.version.split()[0]} "
        f"threads={torch.get_num_threads()}"
    )
    print("| image px | batch | precision | params | images/s | s/step | peak RSS GB |")
    print(
        f"| {args.image_size} | {args.batch_size} | {r['precision']} | {r['params'] / 1e6:.2f} M | "
        f"{r['images_per_s']:.2f} | {r['s_per_step']:.2f} | {r['peak_rss_gb']:.2f} |"
    )


if __name__ == "__main__":
    main()
