"""Training speed on a GPU: precision x memory layout x compiled features, achieved TFLOP/s against
the card's peak, utilisation while training on batches simulated on the fly, and the operations
that dominate a training step and an inference pass.

Usage: python benchmarks/bench_gpu.py [--device cuda] [--image-size 80] [--batch-size 128]
       [--steps 20] [--fit-steps 300] [--no-compile] [--skip-fit] [--skip-profile]
       [--peak-tflops BF16 TF32] [overrides...]

Default model: the shipped architecture (`experiment=sdss_generalist`: width 96, 80 px, 5 bands).
Each section runs in a fresh process, so one configuration's compiled kernels, allocator cache
and peak memory do not leak into the next.
  1. one training step (forward, backward, AdamW; `bench_train.measure`) for each of
     {32-true, bf16-mixed} x {channels_last off, on} x {compile_features off, on}: images/s,
     achieved TFLOP/s (the step's convolution and matrix FLOPs, counted once with
     `torch.utils.flop_counter`, over its time) and the share of the card's dense peak: the BF16
     tensor-core peak for bf16-mixed, the TF32 one for 32-true (cuDNN runs float32 convolutions
     on TF32 tensor cores by default);
  2. `bliss mode=train train.data=simulate simulator=torch simulator.renderer.device=cuda`
     (batches rendered on the GPU and kept there) for `--fit-steps` steps in bf16-mixed: images/s
     and the mean GPU utilisation (`nvidia-smi`, sampled every 100 ms) after the first 20 % of
     the steps;
  3. `torch.profiler` tables of one training step and one `Encoder.infer` pass: the operations
     with the most self time on the device.
On the CPU (`--device cpu`) everything runs too: the utilisation is the training process's CPU
time over wall time x cores, and the share of peak is printed only with `--peak-tflops`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytorch_lightning as pl

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:  # bench_train, also in spawned processes
    sys.path.insert(0, str(BENCH_DIR))

from bench_reference import in_fresh_process  # noqa: E402 - found through BENCH_DIR

#: dense (no sparsity) tensor-core peaks, TFLOP/s: (BF16, TF32), from NVIDIA's data sheets;
#: the first name found in `torch.cuda.get_device_name()` wins
PEAK_TFLOPS = {
    "H100 PCIe": (756.0, 378.0),
    "H100 NVL": (835.0, 418.0),
    "H100": (989.4, 494.7),  # SXM5
    "H200": (989.4, 494.7),
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
}
MODEL = ["experiment=sdss_generalist"]


def peak_tflops(device_name: str) -> tuple[float, float] | None:
    """``(bf16, tf32)`` dense peaks of the named card, or None when it is not in the table."""
    for name, peaks in PEAK_TFLOPS.items():
        if name in device_name:
            return peaks
    return None


def _step(args: argparse.Namespace, overrides: list[str], count_flops: bool) -> dict:
    import bench_train

    return bench_train.measure(
        args.image_size, args.batch_size, args.steps, args.device, overrides, count_flops
    )


def step_matrix(args: argparse.Namespace, peaks: tuple[float, float] | None) -> list[str]:
    """Section 1: one markdown row per configuration."""
    rows = [
        "| precision | channels_last | compiled | images/s | ms/step | TFLOP/s | % of peak "
        "| peak GPU GB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    flops = None
    for precision in ("32-true", "bf16-mixed"):
        for channels_last in (False, True):
            for compiled in (False, True) if args.compile else (False,):
                overrides = [
                    *MODEL,
                    *args.overrides,
                    f"trainer.precision={precision}",
                    f"encoder.channels_last={str(channels_last).lower()}",
                    f"encoder.compile_features={str(compiled).lower()}",
                ]
                r = in_fresh_process(_step, args, overrides, flops is None)
                if "error" in r:
                    rows.append(f"| {precision} | {channels_last} | {compiled} | {r['error']} |")
                    continue
                flops = flops or r["flops_per_step"]
                tflops = flops / r["s_per_step"] / 1e12 if flops else float("nan")
                peak = None if peaks is None else peaks[0 if precision == "bf16-mixed" else 1]
                share = f"{100 * tflops / peak:.1f}" if peak else "n/a"
                gpu_gb = f"{r['peak_gpu_gb']:.2f}" if r["peak_gpu_gb"] is not None else "n/a"
                rows.append(
                    f"| {precision} | {channels_last} | {compiled} | {r['images_per_s']:.1f} | "
                    f"{1e3 * r['s_per_step']:.1f} | {tflops:.2f} | {share} | {gpu_gb} |"
                )
    if flops:
        rows.append(
            f"\n{flops / 1e9:.1f} GFLOP per step ({flops / args.batch_size / 1e9:.2f} per image)"
        )
    return rows


class StepClock(pl.Callback):
    """The wall and CPU time at the end of every training step, written as JSON at the end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.times: list[tuple[float, float]] = []

    def on_train_batch_end(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - Lightning's
        self.times.append((time.time(), time.process_time()))

    def on_train_end(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - Lightning's
        Path(self.path).write_text(json.dumps(self.times))


def _fit(args: argparse.Namespace, clock_path: str, run_dir: str) -> dict:
    from hydra import compose, initialize_config_module

    from bliss.cli.main import run

    overrides = [
        "mode=train",
        *MODEL,
        "train.data=simulate",
        "simulator=torch",
        f"simulator.image_size={args.image_size}",
        f"data.batch_size={args.batch_size}",
        f"train.simulate.batches_per_epoch={args.fit_steps}",
        "train.simulate.num_workers=0",
        f"trainer.max_steps={args.fit_steps}",
        "trainer.limit_val_batches=0",
        "++trainer.enable_checkpointing=false",
        "callbacks.checkpoint=null",
        "callbacks.best_checkpoint=null",
        "trainer.precision=bf16-mixed",
        "trainer.enable_progress_bar=false",
        "train.test_after_fit=false",
        f"paths.run_dir={run_dir}",
        "+callbacks.step_clock._target_=bench_gpu.StepClock",
        f"+callbacks.step_clock.path={clock_path}",
        *args.overrides,
    ]
    if args.device == "cuda":
        overrides += ["simulator.renderer.device=cuda", "trainer.accelerator=gpu"]
    else:
        overrides += ["trainer.accelerator=cpu"]
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    start = time.time()
    run(cfg)
    return {"seconds": time.time() - start}


def _sample_gpu(samples: list[tuple[float, float]], stop: threading.Event) -> None:
    command = [
        "nvidia-smi",
        "--query-gpu=utilization.gpu",
        "--format=csv,noheader,nounits",
        "-lms",
        "100",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        while not stop.is_set():
            line = process.stdout.readline()
            if not line:
                break
            try:
                samples.append((time.time(), float(line.split(",")[0])))
            except ValueError:
                continue
        process.terminate()


def fit_utilisation(args: argparse.Namespace) -> list[str]:
    """Section 2: images/s and utilisation while training on batches simulated on the fly."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = None
    if args.device == "cuda":
        sampler = threading.Thread(target=_sample_gpu, args=(samples, stop), daemon=True)
        sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        clock_path = os.path.join(tmp, "clock.json")
        result = in_fresh_process(_fit, args, clock_path, os.path.join(tmp, "run"))
        stop.set()
        if "error" in result:
            return [f"on-the-fly fit failed: {result['error']}"]
        times = json.loads(Path(clock_path).read_text())
    first = max(1, len(times) // 5)  # skip start-up, compilation and allocator warm-up
    (t0, c0), (t1, c1) = times[first - 1], times[-1]
    images_per_s = (len(times) - first) * args.batch_size / (t1 - t0)
    if args.device == "cuda":
        window = [u for t, u in samples if t0 <= t <= t1]
        busy = f"GPU utilisation {sum(window) / max(len(window), 1):.0f} % ({len(window)} samples)"
    else:
        busy = f"CPU busy {100 * (c1 - c0) / (t1 - t0) / os.cpu_count():.0f} % of {os.cpu_count()} cores"
    return [
        f"on-the-fly fit, {args.fit_steps} steps of {args.batch_size} images at "
        f"{args.image_size} px, bf16-mixed, batches rendered on {args.device}: "
        f"{images_per_s:.1f} images/s after step {first}; {busy}; whole run {result['seconds']:.0f} s"
    ]


def _profile(args: argparse.Namespace) -> list[str]:
    import bench_train
    import torch
    from torch.profiler import ProfilerActivity, profile

    overrides = [*MODEL, *args.overrides, "trainer.precision=bf16-mixed"]
    _, encoder, inputs, train_step = bench_train.training_setup(
        args.image_size, args.batch_size, args.device, overrides
    )
    autocast = torch.autocast(args.device, dtype=torch.bfloat16)

    def infer() -> None:
        with torch.no_grad(), autocast:
            encoder.eval().infer(inputs)
        encoder.train()

    activities = [ProfilerActivity.CPU]
    sort = "self_cpu_time_total"
    if args.device == "cuda":
        activities.append(ProfilerActivity.CUDA)
        sort = "self_cuda_time_total"
    lines = []
    for name, function in (("training step", train_step), ("Encoder.infer", infer)):
        function()  # warm-up
        with profile(activities=activities) as prof:
            function()
            if args.device == "cuda":
                torch.cuda.synchronize()
        lines.append(f"\n{name}, bf16-mixed, batch {args.batch_size} at {args.image_size} px:")
        lines.append(prof.key_averages().table(sort_by=sort, row_limit=8))
    return lines


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", type=int, default=80)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 128 on CUDA, 32 on CPU"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fit-steps", type=int, default=300)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, nargs=2, metavar=("BF16", "TF32"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.batch_size is None:
        args.batch_size = 128 if args.device == "cuda" else 32
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    peaks = tuple(args.peak_tflops) if args.peak_tflops else None
    if peaks is None and args.device == "cuda":
        peaks = peak_tflops(name)
    print(
        f"device={args.device} ({name}) torch={torch.__version__} python={sys.version.split()[0]} "
        f"peak TFLOP/s (bf16, tf32)={peaks or 'unknown'} image={args.image_size} px "
        f"batch={args.batch_size} overrides={args.overrides}"
    )
    print("\n".join(step_matrix(args, peaks)))
    if not args.skip_fit:
        print()
        print("\n".join(fit_utilisation(args)))
    if not args.skip_profile:
        lines = in_fresh_process(_profile, args)
        print("\n".join(lines) if isinstance(lines, list) else f"profile failed: {lines['error']}")


if __name__ == "__main__":
    main()
