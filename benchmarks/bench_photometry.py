"""Photometry per magnitude bin and source type: the network, PSF-fit star photometry, and sep.

Usage: python benchmarks/bench_photometry.py [--n-fields 20] [--out DIR] [--sets LIST]
(LIST: comma-separated from nominal, varied, kolmogorov, gaussian; default the first three.)

Simulates 512 x 512 px 5-band `sdss` fields (the quality gate's prior: ~100 sources, r 16-23,
half galaxies): nominal seeing and sky; seeing and sky drawn per field; a misspecified PSF (a
Kolmogorov or a Gaussian profile of the nominal FWHM, where the model was trained on Moffat
PSFs and the header still says "Moffat"). Each field is cataloged with the shipped generalist
with `predict.psf_photometry` off (the network's fluxes, column ``network``), on with
`predict.galaxy_photometry` off (PSF-fit stars, ``psf_photometry``) and with both on (the
default, ``model_fits``: bright galaxies model-fitted too), and with the `sep` baseline. For
matched sources (1.5 px) it prints, per r bin and type: median |dmag|, median dmag (bias),
coverage of the 90 % interval, for stars the ratio of the median absolute flux error to the
Cramer-Rao bound; and it draws a reliability plot (expected vs observed coverage at 10 levels)
per set.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from scipy.spatial import cKDTree

from bliss.catalog.io import plocs_to_xy
from bliss.cli.generate import build_simulator
from bliss.encoder.checkpoint import load_encoder
from bliss.evaluate.baseline import sep_catalog
from bliss.metrics.photometry import flux_cramer_rao_std
from bliss.predict.model import model_conditions
from bliss.predict.predictor import PredictorSettings, build_predictor
from bliss.predict.psf_model import moffat_stamp
from bliss.simulator.field import write_simulated_field

SEED = 9_500_000
BINS = [16, 18, 19, 20, 21, 22, 23]
LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
QUANTILES = tuple(sorted({q for level in LEVELS for q in ((1 - level) / 2, (1 + level) / 2)}))
DEFAULT_CKPT = Path(__file__).resolve().parents[1] / "bliss" / "models" / "sdss_generalist.ckpt"
PRIOR = [
    "simulator.image_size=512",
    "paths.run_dir=.",
    "prior.density_per_arcmin2=8.8",
    "prior.star_flux.min_nmgy=0.631",
    "prior.star_flux.max_nmgy=398.1",
    "prior.galaxy_flux.min_nmgy=0.631",
    "prior.galaxy_flux.max_nmgy=398.1",
    "prior.prob_galaxy=0.5",
]


def simulate(directory: Path, n_fields: int, kind: str) -> tuple[list[Path], object]:
    overrides = ["mode=evaluate", *PRIOR]
    if kind == "varied":
        overrides += [
            "simulator.conditions.fwhm_scale=[0.8,1.35]",
            "simulator.conditions.sky_scale=[0.6,1.5]",
        ]
    if kind in ("kolmogorov", "gaussian"):
        import galsim

        directory.mkdir(parents=True, exist_ok=True)
        profile = galsim.Kolmogorov if kind == "kolmogorov" else galsim.Gaussian
        for band in "ugriz":
            psf = profile(fwhm=1.3).drawImage(nx=41, ny=41, scale=0.396).array
            np.save(directory / f"psf_{band}.npy", psf / psf.sum())
            overrides.append(f"+simulator.psf_images.{band}={directory}/psf_{band}.npy")
    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    simulator = build_simulator(cfg)
    images = []
    for index in range(n_fields):
        image = directory / f"field_{index:03d}.fits"
        truth = directory / f"field_{index:03d}_truth.fits"
        if not (image.exists() and truth.exists()):
            offset = {"nominal": 0, "varied": 1000, "kolmogorov": 2000, "gaussian": 3000}[kind]
            write_simulated_field(simulator, SEED + offset + index, image, truth)
        images.append(image)
    return images, instantiate(cfg.survey)


def measure(images: list[Path], survey, predictors: dict) -> dict[str, list]:
    """Per matched source and band-r: truth, type, estimate, quantiles, and the CR bound."""
    rows: dict[str, list] = {name: [] for name in (*predictors, "sep")}
    ref = survey.bands.index(survey.reference_band)
    for path in images:
        image = survey.read_image(path, survey.bands)
        truth = Table.read(str(path).replace(".fits", "_truth.fits"))
        true_xy = np.c_[np.asarray(truth["x"]), np.asarray(truth["y"])]
        true_flux = np.asarray(truth[f"flux_{survey.reference_band}"], float)
        true_type = np.asarray(truth["source_type"])
        catalogs = {
            name: p.predict(image, threshold=0.5, quantiles=QUANTILES)
            for name, p in predictors.items()
        }
        catalogs["sep"] = sep_catalog(
            image, survey.reference_band, survey.pixel_scale_arcsec, quantiles=QUANTILES
        )
        per_electron = 10 ** (-0.4 * (float(image.magzero[ref]) - 22.5))
        fwhm_px = float(image.psf_fwhm_arcsec[ref]) / survey.pixel_scale_arcsec
        psf = moffat_stamp(fwhm_px, survey.psf_beta, 0.0, 0.0, half=20)
        sky = float(np.median(image.background[ref]))
        for name, catalog in catalogs.items():
            n = int(catalog["n_sources"][0])
            if n == 0:
                continue
            x, y = plocs_to_xy(catalog["plocs"][0, :n].numpy())
            distance, index = cKDTree(np.c_[x, y]).query(true_xy)
            for t in np.flatnonzero(distance < 1.5):
                j = index[t]
                bound = flux_cramer_rao_std(psf, sky, true_flux[t] / per_electron) * per_electron
                quantiles = [float(catalog[f"fluxes@{q:g}"][0, j, ref]) for q in QUANTILES]
                rows[name].append(
                    (
                        22.5 - 2.5 * np.log10(true_flux[t]),
                        int(true_type[t]),
                        true_flux[t],
                        float(catalog["fluxes"][0, j, ref]),
                        bound,
                        *quantiles,
                    )
                )
    return {k: np.array(v) for k, v in rows.items()}


def coverage(rows: np.ndarray, level: float) -> float:
    """Fraction of true fluxes inside the central ``level`` interval."""
    lo = min(range(len(QUANTILES)), key=lambda i: abs(QUANTILES[i] - (1 - level) / 2))
    hi = min(range(len(QUANTILES)), key=lambda i: abs(QUANTILES[i] - (1 + level) / 2))
    truth = rows[:, 2]
    return float(np.mean((truth >= rows[:, 5 + lo]) & (truth <= rows[:, 5 + hi])))


def table(rows: dict[str, np.ndarray]) -> tuple[str, dict]:
    lines = [
        f"{'r':<7}{'type':<7}{'n':>5}"
        + "".join(f"{name + ' |dm|':>14}{'bias':>8}{'cov90':>7}" for name in rows)
        + f"{'CR ratio':>10}"
    ]
    summary: dict = {}
    for lo, hi in zip(BINS[:-1], BINS[1:], strict=True):
        for kind, label in ((0, "star"), (1, "galaxy")):
            line = f"{lo}-{hi:<4}{label:<7}"
            n = None
            for name, data in rows.items():
                sel = (data[:, 0] >= lo) & (data[:, 0] < hi) & (data[:, 1] == kind)
                part = data[sel]
                if n is None:
                    n = len(part)
                    line += f"{n:>5}"
                if not len(part):
                    line += f"{'-':>14}{'-':>8}{'-':>7}"
                    continue
                dm = 2.5 * np.log10(np.clip(part[:, 3], 1e-9, None) / part[:, 2])
                entry = {
                    "n": len(part),
                    "abs_dmag": float(np.median(np.abs(dm))),
                    "bias": float(np.median(dm)),
                    "coverage90": coverage(part, 0.9),
                }
                if kind == 0:
                    entry["cr_ratio"] = float(
                        np.median(np.abs(part[:, 3] - part[:, 2]))
                        / (0.6745 * np.median(part[:, 4]))
                    )
                summary.setdefault(name, {})[f"{lo}-{hi} {label}"] = entry
                line += (
                    f"{entry['abs_dmag']:>14.4f}{entry['bias']:>+8.4f}{entry['coverage90']:>7.2f}"
                )
            star = summary.get("model_fits", {}).get(f"{lo}-{hi} star", {})
            line += f"{star.get('cr_ratio', float('nan')):>10.2f}" if kind == 0 else ""
            lines.append(line)
    return "\n".join(lines), summary


def reliability_plot(rows: dict[str, np.ndarray], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="grey", lw=1)
    for name, data in rows.items():
        for kind, style in ((0, "-o"), (1, "--s")):
            part = data[data[:, 1] == kind]
            if len(part):
                observed = [coverage(part, level) for level in LEVELS]
                label = f"{name}, {'stars' if kind == 0 else 'galaxies'}"
                axes.plot(LEVELS, observed, style, ms=3, label=label)
    axes.set_xlabel("nominal coverage of the central interval")
    axes.set_ylabel("observed coverage (r-band flux)")
    axes.set_title(title)
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=str(DEFAULT_CKPT))
    parser.add_argument("--n-fields", type=int, default=20)
    parser.add_argument("--out", default="outputs/bench_photometry")
    parser.add_argument("--sets", default="nominal,varied,kolmogorov")
    args = parser.parse_args()
    print(f"torch={torch.__version__} python={sys.version.split()[0]} device=cpu")
    encoder, model_config = load_encoder(args.checkpoint)
    model = model_conditions(tuple(encoder.bands), model_config)
    report = {}
    for kind in args.sets.split(","):
        start = time.perf_counter()
        directory = Path(args.out) / kind
        images, survey = simulate(directory, args.n_fields, kind)
        predictors = {
            "network": build_predictor(
                PredictorSettings(psf_photometry=False), encoder, model, False, survey
            ),
            "psf_photometry": build_predictor(
                PredictorSettings(galaxy_photometry=False), encoder, model, False, survey
            ),
            "model_fits": build_predictor(PredictorSettings(), encoder, model, False, survey),
        }
        rows = measure(images, survey, predictors)
        text, summary = table(rows)
        print(f"\n## {kind}: {args.n_fields} fields ({time.perf_counter() - start:.0f} s)")
        print(text)
        reliability_plot(rows, directory / "reliability.png", f"{kind} fields")
        report[kind] = summary
    out = Path(args.out) / "photometry.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"\n-> {out}")


if __name__ == "__main__":
    main()
