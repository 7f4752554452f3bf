"""The whole `bliss mode=predict survey=sdss_frames` command on real SDSS frames: seconds and peak RSS.

Usage: python benchmarks/bench_predict_field.py --data-dir ../shared/data/sdss \
       [--fields 94-1-12 2583-2-136] [--repeat 2] [overrides ...]

Each run is a fresh `bliss` process (imports, model loading, reading and aligning the five
frames, the crowded-block search, both models where the frame is crowded, the catalog, region
file and PNG), timed from the outside; peak RSS is the child's ``ru_maxrss``. Extra arguments are
Hydra overrides passed to every run (e.g. ``predict.crowded.checkpoint=null``). Targets: 94-1-12
(sparse) in at most 6 s and 1.2 GB (issue 14); the M2 frame 2583-2-136 in at most 60 s (issue 13).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench_startup import timed  # a fresh bliss process: seconds, peak RSS, last line


def field_overrides(data_dir: str, field: str) -> list[str]:
    """The Hydra overrides of `mode=predict` on the SDSS frame ``field`` ("run-camcol-field")."""
    run, camcol, number = field.split("-")
    return [
        "mode=predict",
        "survey=sdss_frames",
        f"survey.data_dir={data_dir}",
        f"survey.run={run}",
        f"survey.camcol={camcol}",
        f"survey.field={number}",
    ]


def run_once(
    data_dir: str, field: str, overrides: list[str], out: Path
) -> tuple[float, float, str]:
    """One `bliss mode=predict` of ``field`` ("run-camcol-field"); (seconds, peak GB, last line)."""
    return timed(
        [
            *field_overrides(data_dir, field),
            f"predict.output={out / f'{field}.fits'}",
            f"hydra.run.dir={out / 'hydra'}",
            *overrides,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("BLISS_SDSS_DATA", "data/sdss"))
    parser.add_argument("--fields", nargs="+", default=["94-1-12", "2583-2-136"])
    parser.add_argument("--repeat", type=int, default=2)
    args, overrides = parser.parse_known_args()
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print("| field | run | seconds | peak RSS GB | output |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for field in args.fields:
            for attempt in range(args.repeat):
                seconds, peak, last = run_once(args.data_dir, field, overrides, Path(tmp))
                print(
                    f"| {field} | {attempt + 1} | {seconds:.1f} | {peak:.2f} | {last} |", flush=True
                )


if __name__ == "__main__":
    main()
