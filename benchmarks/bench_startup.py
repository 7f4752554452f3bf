"""Start-up and whole-command times of `bliss`, each in a fresh process: seconds and peak RSS.

Usage: python benchmarks/bench_startup.py [--repeat 3] [--height 1489 --width 2048] [--skip-frame]

Rows (the median of ``--repeat`` runs, peak RSS of the slowest):

- ``import bliss.cli``: what every command pays before Hydra composes its config;
- a missing ``predict.input``, and an unknown ``predict.output`` extension: how long a typo costs
  (both are refused before the model loads);
- ``bliss mode=predict`` on the shipped sample (256 x 256 px x 5 bands), all outputs;
- ``bliss mode=predict`` on a simulated 2048 x 1489 px x 5-band frame in the FITS input contract
  (the `sdss` preset, simulated once), all outputs: catalog, region file, PNG.

Targets (issue 14): import under 1 s, a missing input under 1.5 s, the whole command on the frame
in at most 6 s and 1.2 GB. The real SDSS frames (bz2 frames aligned through their WCS, aperture
corrections, the crowded-block search) are timed by `bench_predict_field.py`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_predict import write_frame

#: a child that runs its arguments as a script or the bliss command and reports its peak RSS
CHILD = """
import resource, sys
try:
    if sys.argv[1] == "-c":
        exec(sys.argv[2])
    else:
        from bliss.cli.main import cli
        sys.argv = ["bliss", *sys.argv[1:]]
        cli()
finally:
    # VmHWM starts afresh at exec; ru_maxrss can carry the forking parent's peak
    try:
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        peak_kb = int(status.split()[0])
    except (OSError, IndexError):
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("PEAK_KB", peak_kb, file=sys.stderr)
"""


def timed(arguments: list[str], expect_failure: bool = False) -> tuple[float, float, str]:
    """One fresh process: (seconds, peak GB, its last stdout or stderr line)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *arguments], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if bool(done.returncode) != expect_failure:
        raise SystemExit(f"{arguments} exited {done.returncode}:\n{done.stderr[-3000:]}")
    peak = [line for line in done.stderr.splitlines() if line.startswith("PEAK_KB ")]
    text = done.stdout if not expect_failure else done.stderr.replace(peak[-1], "")
    last = text.strip().splitlines()[-1] if text.strip() else ""
    return seconds, int(peak[-1].split()[1]) / 1e6, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--height", type=int, default=1489)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--skip-frame", action="store_true", help="no simulated-frame row")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows = [
            ("import bliss.cli", ["-c", "import bliss.cli"], False, 1.0, None),
            (
                "missing predict.input",
                ["mode=predict", f"predict.input={out / 'none.fits'}", f"paths.root={out}"],
                True,
                1.5,
                None,
            ),
            (
                "unknown predict.output extension",
                ["mode=predict", f"predict.output={out / 'cat.txt'}", f"paths.root={out}"],
                True,
                None,
                None,
            ),
            (
                "predict, shipped sample (256 x 256 x 5)",
                ["mode=predict", f"predict.output={out / 'sample.fits'}", f"paths.root={out}"],
                False,
                None,
                None,
            ),
        ]
        if not args.skip_frame:
            frame, survey_yaml = write_frame(out, args.height, args.width)
            rows.append(
                (
                    f"predict, simulated frame ({args.width} x {args.height} x 5)",
                    [
                        "mode=predict",
                        f"predict.input={frame}",
                        f"predict.output={out / 'frame_catalog.fits'}",
                        f"paths.root={out}",
                    ],
                    False,
                    6.0,
                    1.2,
                )
            )
        print("| command | seconds (median) | runs | peak RSS GB | target | last line |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, arguments, fails, target_s, target_gb in rows:
            runs = [timed(arguments, fails) for _ in range(args.repeat)]
            seconds = statistics.median(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            target = []
            if target_s is not None:
                target.append(f"<= {target_s} s: {'met' if seconds <= target_s else 'NOT met'}")
            if target_gb is not None:
                target.append(f"<= {target_gb} GB: {'met' if peak <= target_gb else 'NOT met'}")
            spread = " / ".join(f"{r[0]:.2f}" for r in runs)
            print(
                f"| {name} | {seconds:.2f} | {spread} | {peak:.2f} | {'; '.join(target) or '-'} "
                f"| {runs[-1][2][:90]} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
