"""Quality gate: the shipped model against the `sep` baseline on fresh simulated SDSS fields.

Usage: python benchmarks/bench_quality_gate.py [--checkpoint PATH] [--n-fields 80] [--out DIR]
       [--sets nominal,varied,faint_red,sersic,crowded_stars] [--no-confusion]

Simulates sets of 512 x 512 px 5-band `sdss` fields with a seed never used in training (~100
sources per field, r from 16 to 23, PSF FWHM in the headers):

- nominal: the training prior's shapes and colours, half galaxies, the survey's seeing and sky;
- varied: the same, with each field's seeing (FWHM x0.8-1.35) and sky (x0.6-1.5) drawn;
- faint_red (another prior): steeper number counts (alpha 0.9 for stars, 1.2 for galaxies),
  redder stars and galaxies, compact bulge-dominated galaxies (disk share 0-0.5);
- sersic (another prior and profile family): shallow counts (alpha 0.3 / 0.4), 70 % galaxies,
  bluer, larger (disk hlr median 1.3"), disk-dominated (0.5-1) galaxies whose bulges are Sersic
  n = 2 profiles where training only ever saw de Vaucouleurs (n = 4) bulges;
- crowded_stars (a crowded field, as the issue's held-out one: ~600 stars in 256 x 256 px):
  stars only, ~2400 per field (0.009 per px², up to 4 in a 4 px tile), r 17-22.5 with a steep
  luminosity function (alpha 0.7); a quarter of the fields of the other sets (~2400 stars
  each: each field costs ~15 s of PSF fits).

Prints bliss vs sep side by side, the coverage of bliss's 90 % intervals of every band's flux
and of both coordinates per true r bin and type (with the median r-band magnitude bias), and
writes a reliability plot per set (`<out>/<set>/evaluation/reliability.png`, coverage at 10
levels). Gate checks:
- detection (nominal and varied): F1 >= sep + 0.10 overall and above sep in the two faintest
  bins, star/galaxy accuracy >= 0.9; (crowded_stars) F1 >= sep + 0.10 and star/galaxy
  accuracy >= 0.98 (every source is a star);
- calibration (every set): each (type, r bin, quantity) cell's 90 % coverage in [0.85, 0.95]
  up to its binomial noise: cells of at least 20 sources, failed when outside by more than two
  standard errors, so that a calibrated cell of 100 sources is not failed one time in three by
  chance; the number of cells strictly inside is printed too;
- bias (every set): median r-band dmag within 0.01 for stars and 0.02 for galaxies at r < 21.

80 fields per set (~8000 sources) by default: the binomial standard error of the star/galaxy
accuracy is then 0.003, against 0.007 with 20 fields, when the shipped model clears the 0.9
threshold by ~0.01. With 20 fields the verdict hung on which fields were drawn (0.907 on one
draw, 0.896 on another).
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from bliss.cli.generate import build_simulator
from bliss.encoder.checkpoint import load_encoder
from bliss.evaluate.truth import evaluate_files, format_results
from bliss.metrics.calibration import format_binned_coverage, format_profile_bias
from bliss.predict.model import model_conditions
from bliss.predict.predictor import PredictorSettings, build_predictor
from bliss.simulator.field import write_simulated_field

SEED = 9_000_001  # training uses seed 42
MAG_BINS = [16, 18, 19, 20, 21, 22, 23]  # detection and calibration
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
COVERAGE_RANGE = (0.85, 0.95)
MIN_CELL = 20  # sources a (type, bin) cell needs to be judged
BIAS_LIMIT = {"star": 0.01, "galaxy": 0.02}  # mag, at r < BIAS_FAINTEST
BIAS_FAINTEST = 21
DEFAULT_CKPT = Path(__file__).resolve().parents[1] / "bliss" / "models" / "sdss_generalist.ckpt"
BASE = [
    "mode=evaluate",
    "simulator.image_size=512",
    "paths.run_dir=.",
    "prior.density_per_arcmin2=8.8",  # ~100 sources in 512 x 512 SDSS pixels
    "prior.star_flux.min_nmgy=0.631",
    "prior.star_flux.max_nmgy=398.1",  # r = 23 .. 16
    "prior.galaxy_flux.min_nmgy=0.631",
    "prior.galaxy_flux.max_nmgy=398.1",
]
#: the share of ``--n-fields`` a set simulates, where not all of them (its fields are full)
FIELD_SHARE = {"crowded_stars": 0.25}
#: per set: overrides on top of BASE, and the seed offset (fields differ between sets)
SETS = {
    "nominal": (["prior.prob_galaxy=0.5"], 0),
    "varied": (
        [
            "prior.prob_galaxy=0.5",
            "simulator.conditions.fwhm_scale=[0.8,1.35]",
            "simulator.conditions.sky_scale=[0.6,1.5]",
        ],
        1000,
    ),
    "faint_red": (
        [
            "prior.prob_galaxy=0.5",
            "prior.star_flux.alpha=0.9",
            "prior.galaxy_flux.alpha=1.2",
            "prior.star_colors.mean={u:2.4,g:0.9,r:0.0,i:-0.35,z:-0.5}",
            "prior.galaxy_colors.mean={u:2.6,g:1.0,r:0.0,i:-0.5,z:-0.85}",
            "prior.galaxy_shape.disk_hlr_arcsec={median:0.5,sigma:0.4,min:0.2,max:5.0}",
            "prior.galaxy_shape.bulge_hlr_arcsec={median:0.3,sigma:0.4,min:0.1,max:3.0}",
            "prior.galaxy_shape.disk_frac=[0.0,0.5]",
        ],
        2000,
    ),
    "sersic": (
        [
            "prior.prob_galaxy=0.7",
            "prior.star_flux.alpha=0.3",
            "prior.galaxy_flux.alpha=0.4",
            "prior.galaxy_colors.mean={u:1.5,g:0.45,r:0.0,i:-0.25,z:-0.4}",
            "prior.galaxy_colors.scatter={u:0.35,g:0.15,r:0.0,i:0.1,z:0.15}",
            "prior.galaxy_shape.disk_hlr_arcsec={median:1.3,sigma:0.6,min:0.2,max:5.0}",
            "prior.galaxy_shape.disk_frac=[0.5,1.0]",
            "prior.galaxy_shape.q_min=0.1",
            "simulator.renderer.bulge_sersic_n=2.0",
        ],
        3000,
    ),
    "crowded_stars": (
        [
            "prior.prob_galaxy=0.0",
            "prior.density_per_arcmin2=210",  # ~2400 stars per 512 x 512 field
            "prior.max_sources=4",
            "prior.star_flux.alpha=0.7",
            "prior.star_flux.min_nmgy=1.0",
            "prior.star_flux.max_nmgy=158.5",  # r = 22.5 .. 17
        ],
        4000,
    ),
}


def simulate(directory: Path, n_fields: int, name: str) -> tuple[list[Path], list[Path], object]:
    overrides, offset = SETS[name]
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*BASE, *overrides])
    simulator = build_simulator(cfg)
    images, truths = [], []
    for index in range(n_fields):
        image, truth = (
            directory / f"field_{index:03d}.fits",
            directory / f"field_{index:03d}_truth.fits",
        )
        if not (image.exists() and truth.exists()):
            write_simulated_field(simulator, SEED + offset + index, image, truth)
        images.append(image)
        truths.append(truth)
    return images, truths, cfg


def detection_checks(name: str, results: dict) -> list[tuple[str, bool]]:
    ours, theirs = results["bliss"], results["sep"]
    if name == "crowded_stars":
        # stars only: the moved blocks' type prior follows their galaxy fraction, so a crowd's
        # ambiguous faint stars are stars (0.941 when only the counts were moved)
        return [
            ("F1 >= sep F1 + 0.10", ours["f1"] >= theirs["f1"] + 0.10),
            ("star/galaxy accuracy >= 0.98", ours.get("classification_accuracy", 0) >= 0.98),
        ]
    if name not in ("nominal", "varied"):
        return []
    return [
        ("F1 >= sep F1 + 0.10", ours["f1"] >= theirs["f1"] + 0.10),
        ("F1 > sep in [21, 22)", ours["per_bin"]["f1"][-2] > theirs["per_bin"]["f1"][-2]),
        ("F1 > sep in [22, 23)", ours["per_bin"]["f1"][-1] > theirs["per_bin"]["f1"][-1]),
        ("star/galaxy accuracy >= 0.9", ours.get("classification_accuracy", 0) >= 0.9),
    ]


def cell_outside(coverage: float, n: int) -> bool:
    """Whether a cell's coverage is outside COVERAGE_RANGE by more than two standard errors."""
    low, high = COVERAGE_RANGE
    if n == 0 or math.isnan(coverage):
        return False
    bound = low if coverage < low else high
    return abs(coverage - min(max(coverage, low), high)) > 2 * math.sqrt(bound * (1 - bound) / n)


def calibration_checks(rows: list[dict]) -> tuple[list[tuple[str, bool]], str]:
    """Per-cell coverage and per-type bias checks, and a line counting the cells inside."""
    keys = [k for k in rows[0] if k.startswith("coverage_")]
    cells = [(row, key) for row in rows if row["n"] >= MIN_CELL for key in keys]
    inside = sum(COVERAGE_RANGE[0] <= row[key] <= COVERAGE_RANGE[1] for row, key in cells)
    failed = [
        f"{row['type']} {row['mag_lo']:g}-{row['mag_hi']:g} {key.removeprefix('coverage_')}"
        f" {row[key]:.2f} (n={row['n']})"
        for row, key in cells
        if cell_outside(row[key], row["n"])
    ]
    checks = [
        (
            "90% coverage in [0.85, 0.95] in every (type, r bin, quantity) cell, within 2 s.e."
            + (f"; outside: {', '.join(failed)}" if failed else ""),
            not failed,
        )
    ]
    for kind, limit in BIAS_LIMIT.items():
        biases = [
            row["mag_bias_median"]
            for row in rows
            if row["type"] == kind and row["n"] >= MIN_CELL and row["mag_hi"] <= BIAS_FAINTEST
        ]
        worst = max(biases, key=abs, default=float("nan"))
        checks.append(
            (
                f"{kind} |median dmag| <= {limit} at r < {BIAS_FAINTEST} (worst {worst:+.4f})",
                not abs(worst) > limit,
            )
        )
    summary = f"{inside} of {len(cells)} cells (>= {MIN_CELL} sources) strictly inside [0.85, 0.95]"
    return checks, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    parser.add_argument("--n-fields", type=int, default=80)
    parser.add_argument("--out", default="outputs/quality_gate")
    parser.add_argument("--sets", default=",".join(SETS), help=f"from {', '.join(SETS)}")
    parser.add_argument(
        "--network-fluxes", action="store_true", help="predict.psf_photometry=false"
    )
    parser.add_argument("--no-confusion", action="store_true", help="predict.confusion_noise=false")
    args = parser.parse_args()
    names = args.sets.split(",")
    unknown = [name for name in names if name not in SETS]
    if unknown:
        parser.error(f"--sets: unknown {unknown}; expected names from {list(SETS)}")
    print(
        f"torch={torch.__version__} python={sys.version.split()[0]} device=cpu threads={torch.get_num_threads()}"
    )
    encoder, model_config = load_encoder(args.checkpoint)
    model = model_conditions(tuple(encoder.bands), model_config)
    window = int(model_config["simulator"]["image_size"])  # predict's window_px=auto
    bands = tuple(encoder.bands)
    passed = True
    report = {}
    for name in names:
        directory = Path(args.out) / name
        start = time.perf_counter()
        n_fields = max(round(args.n_fields * FIELD_SHARE.get(name, 1.0)), 1)
        images, truths, cfg = simulate(directory, n_fields, name)
        survey = instantiate(cfg.survey)
        # the shipped defaults of `mode=predict` (PSF-fit star photometry on), unless asked
        settings = PredictorSettings(
            window_px=window,
            batch_chunks=8,
            device="cpu",
            psf_photometry=not args.network_fluxes,
            confusion_noise=not args.no_confusion,
        )
        predictor = build_predictor(settings, encoder, model, progress=False, survey=survey)
        results = evaluate_files(
            predictor,
            survey,
            images,
            truths,
            threshold=0.5,
            match_dist_px=1.5,
            mag_bins=MAG_BINS,
            output=directory / "evaluation",
            levels=LEVELS,
        )
        ours = results["bliss"]
        print(
            f"\n## {name}: {n_fields} fields, {ours['n_true']} true sources "
            f"({time.perf_counter() - start:.0f} s)"
        )
        print(format_results(results, MAG_BINS))
        print(format_binned_coverage(ours["calibration"], bands))
        if "galaxy_profiles" in ours:  # not checked: the limit is on all galaxies
            print(format_profile_bias(ours["galaxy_profiles"]))
        checks = detection_checks(name, results)
        calibration, summary = calibration_checks(ours["calibration"])
        print(summary)
        for label, ok in checks + calibration:
            print(f"  [{'PASS' if ok else 'FAIL'}] {label}")
            passed &= ok
        report[name] = results
    out = Path(args.out) / "quality_gate.json"
    out.write_text(json.dumps(report, indent=1, default=float))
    print(f"\nquality gate: {'PASSED' if passed else 'FAILED'} -> {out}")


if __name__ == "__main__":
    main()
