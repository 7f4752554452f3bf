"""Score the psf_variation models on the specialist's conditions, the varied pool and out of range.

Every model sees the same simulated images of each test set (fresh seeds, never used in
training). Per model and set: F1 of the point estimate (matched within 1 px, sources brighter
than r = 22.5 on both sides), overall and per r bin, the median |dmag| of matched sources at
r < 21, and the coverage of the 90 % intervals of the r flux and of the position; on the pool,
also per quartile of the images' r-band FWHM.

    BLISS_SDSS_DATA=DIR python case_studies/psf_variation/evaluate_psf.py \\
        --models specialist=CKPT blind=CKPT fwhm=CKPT aware=CKPT \\
        --out case_studies/psf_variation/results

Writes ``psf_study.{json,md,png}``; the JSON records the arguments and each checkpoint's sha256.
"""

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from tqdm import tqdm

from bliss.catalog import FullCatalog
from bliss.catalog.convert import nmgy_to_mag
from bliss.catalog.full import concat_full_catalogs
from bliss.cli.generate import build_simulator
from bliss.encoder.checkpoint import load_encoder
from bliss.metrics import flux_metrics, match_full_catalogs
from bliss.metrics.calibration import interval_hits
from bliss.metrics.detection import detection_metrics

CONF = Path(__file__).parent / "conf"
REF_BAND = 2  # r
MAG_LIMIT = 22.5
MAG_BINS = [14.0, 20.0, 21.0, 22.0, 22.5]
LEVEL = 0.9
INTERVAL = (0.05, 0.95)

#: test sets: (experiment preset, overrides, what it is)
TEST_SETS = {
    "specialist": ("psf_specialist", [], "94-1-12's psField PSFs and sky (the specialist's own)"),
    "pool": ("psf_aware", [], "the generalists' pool: two psField fields and parametric Moffats"),
    "out_of_range": (
        "psf_aware",
        [
            "simulator.conditions.observed=null",
            "simulator.conditions.parametric_psf.fwhm_arcsec=[2.1,2.7]",
        ],
        "parametric Moffats with r FWHM 2.1-2.7 arcsec (training: up to 2.0)",
    ),
    "varying": (
        "psf_aware",
        [
            "simulator=galsim",
            "simulator.conditions.observed=null",
            "simulator.conditions.parametric_psf.fwhm_arcsec=[1.2,1.8]",
            "simulator.conditions.fwhm_gradient=0.5",
        ],
        "parametric Moffats (r FWHM 1.2-1.8 arcsec at the centre) whose FWHM changes linearly "
        "by up to 50 % across the image; the models see the FWHM map",
    ),
}


def compose_test_config(experiment: str, overrides: list[str]):
    """The experiment preset with a test set's overrides."""
    with initialize_config_module("bliss.conf", version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"hydra.searchpath=[file://{CONF.resolve()}]",
                "mode=generate",
                f"experiment={experiment}",
                *overrides,
            ],
        )


def simulate_set(name: str, n_images: int, seed: int, chunk: int = 64) -> list[dict]:
    """The test set's batches (``chunk`` images each), drawn from seeds ``seed, seed + 1, ...``."""
    experiment, overrides, _ = TEST_SETS[name]
    simulator = build_simulator(compose_test_config(experiment, overrides))
    n_chunks = -(-n_images // chunk)
    return [
        simulator.simulate(min(chunk, n_images - i * chunk), seed=seed + i)
        for i in tqdm(range(n_chunks), desc=f"simulate {name}", unit="batch")
    ]


def estimate(encoder, batch: dict) -> FullCatalog:
    """Point-estimate catalog with the ends of the 90 % intervals of fluxes and positions."""
    inputs = {k: v for k, v in batch.items() if k != "catalog"}
    with torch.no_grad():
        features = encoder.tile_features(inputs)
        tiles, params = encoder.infer_from_features(features)
    return encoder.posterior.with_interval_ends(tiles, params, INTERVAL).to_full_catalog()


def score(truth: FullCatalog, est: FullCatalog) -> dict:
    """Detection, photometry and coverage of one model on some images."""
    truth = truth.filter_by_mag(max_mag=MAG_LIMIT, band=REF_BAND)
    est = est.filter_by_mag(max_mag=MAG_LIMIT, band=REF_BAND)
    matches = match_full_catalogs(truth, est, max_dist_px=1.0)
    detection = detection_metrics(truth, est, matches, ref_band=REF_BAND, mag_bins=MAG_BINS)
    flux_hits = interval_hits(truth, est, matches, "fluxes", LEVEL)[:, REF_BAND]
    loc_hits = interval_hits(truth, est, matches, "plocs", LEVEL)
    bright = flux_metrics(truth, est, matches, band=REF_BAND, mag_bins=[-np.inf, 21.0])
    return {
        "f1": detection["f1"],
        "precision": detection["precision"],
        "recall": detection["recall"],
        "f1_per_bin": dict(zip(_bin_names(), detection["per_bin"]["f1"], strict=True)),
        "star_galaxy_accuracy": detection.get("classification_accuracy", float("nan")),
        "median_abs_dmag_r_lt_21": bright["per_bin"]["mag_abs_err_median"][0],
        "coverage_flux_r": float(flux_hits.float().mean()),
        "coverage_position": float(loc_hits.float().mean()),
        "n_true": detection["n_true"],
        "n_matched": detection["n_matched"],
        # per-image counts for the paired bootstrap of F1 differences (not written out)
        "_counts": {
            "all": _image_counts(truth, est, matches, -np.inf, MAG_LIMIT),
            "21-22": _image_counts(truth, est, matches, 21.0, 22.0),
            "types": _type_counts(truth, est, matches),
        },
    }


def _type_counts(truth: FullCatalog, est: FullCatalog, matches: list) -> np.ndarray:
    """Per image: matched sources and those of the right type (star/galaxy). Shape ``n 2``."""
    out = np.zeros((len(matches), 2), dtype=np.int64)
    for i, (t, e) in enumerate(matches):
        true_galaxy = truth["source_type"][i, t, 0] > 0.5
        est_galaxy = est["source_type"][i, e, 0] > 0.5
        out[i] = (len(t), int((true_galaxy == est_galaxy).sum()))
    return out


def _image_counts(
    truth: FullCatalog, est: FullCatalog, matches: list, lo: float, hi: float
) -> np.ndarray:
    """Per image: true sources in ``[lo, hi)`` (true r), those matched, estimates in it (their
    r), those matched. Shape ``n 4``."""
    true_mag = nmgy_to_mag(truth["fluxes"][..., REF_BAND].double()).numpy()
    est_mag = nmgy_to_mag(est["fluxes"][..., REF_BAND].double()).numpy()
    out = np.zeros((len(matches), 4), dtype=np.int64)
    for i, (t, e) in enumerate(matches):
        n_t, n_e = int(truth["n_sources"][i]), int(est["n_sources"][i])
        in_true = (true_mag[i, :n_t] >= lo) & (true_mag[i, :n_t] < hi)
        in_est = (est_mag[i, :n_e] >= lo) & (est_mag[i, :n_e] < hi)
        out[i] = (
            in_true.sum(),
            in_true[t.numpy()].sum(),
            in_est.sum(),
            in_est[e.numpy()].sum(),
        )
    return out


def _f1(counts: np.ndarray) -> float:
    n_true, true_matched, n_est, est_matched = counts.sum(0)
    recall, precision = true_matched / max(n_true, 1), est_matched / max(n_est, 1)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


#: model pairs whose F1 difference gets a paired bootstrap (when both are evaluated)
PAIRS = [("aware", "blind"), ("aware", "fwhm"), ("fwhm", "blind"), ("aware", "specialist")]


def paired_differences(models: dict, n_boot: int = 500, seed: int = 0) -> dict:
    """F1 differences of model pairs on the same images, with bootstrap standard errors."""
    rng = np.random.default_rng(seed)
    out = {}
    for a, b in PAIRS:
        if a not in models or b not in models:
            continue
        for key in ("all", "21-22"):
            ca, cb = models[a]["_counts"][key], models[b]["_counts"][key]
            draws = rng.integers(0, len(ca), size=(n_boot, len(ca)))
            diffs = [_f1(ca[d]) - _f1(cb[d]) for d in draws]
            out[f"{a}-{b} F1 {key}"] = {
                "difference": _f1(ca) - _f1(cb),
                "bootstrap_se": float(np.std(diffs)),
            }
        # star/galaxy accuracy of the matched sources (each model's own matches)
        ta, tb = models[a]["_counts"]["types"], models[b]["_counts"]["types"]
        draws = rng.integers(0, len(ta), size=(n_boot, len(ta)))
        diffs = [_accuracy(ta[d]) - _accuracy(tb[d]) for d in draws]
        out[f"{a}-{b} star/galaxy accuracy"] = {
            "difference": _accuracy(ta) - _accuracy(tb),
            "bootstrap_se": float(np.std(diffs)),
        }
    return out


def _accuracy(counts: np.ndarray) -> float:
    n_matched, n_correct = counts.sum(0)
    return n_correct / max(n_matched, 1)


def _bin_names() -> list[str]:
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(MAG_BINS[:-1], MAG_BINS[1:], strict=True)]


def _subset(catalog: FullCatalog, keep: np.ndarray) -> FullCatalog:
    index = torch.from_numpy(np.flatnonzero(keep))
    data = {key: value[index] for key, value in catalog.items()}
    return FullCatalog(catalog.height_px, catalog.width_px, data)


def evaluate(args: argparse.Namespace) -> dict:
    os.environ.setdefault("BLISS_SDSS_DATA", args.sdss_data)
    models = dict(spec.split("=", 1) for spec in args.models)
    encoders = {name: load_encoder(path)[0] for name, path in models.items()}
    results: dict = {
        "args": {key: str(value) for key, value in vars(args).items()},
        "checkpoints": {
            name: hashlib.sha256(Path(path).read_bytes()).hexdigest()
            for name, path in models.items()
        },
        "test_sets": {name: spec[2] for name, spec in TEST_SETS.items()},
        "scores": {},
    }
    for offset, name in enumerate(TEST_SETS):
        batches = simulate_set(name, args.n_images, seed=args.seed + 1000 * offset)
        truth = concat_full_catalogs([b["catalog"].to_full_catalog() for b in batches])
        # an image's FWHM, or its mean over the image where it varies
        fwhm = torch.cat(
            [
                b["psf_fwhm_arcsec"][:, REF_BAND].reshape(len(b["images"]), -1).mean(1)
                for b in batches
            ]
        ).numpy()
        quartiles = np.quantile(fwhm, [0.0, 0.25, 0.5, 0.75, 1.0])
        which = np.clip(np.searchsorted(quartiles, fwhm, side="right") - 1, 0, 3)
        set_scores = {"fwhm_r_quartile_edges": quartiles.tolist(), "models": {}}
        for model, encoder in encoders.items():
            start = time.perf_counter()
            est = concat_full_catalogs([estimate(encoder, b) for b in batches])
            entry = score(truth, est)
            if name == "pool":
                entry["per_fwhm_quartile"] = [
                    score(_subset(truth, which == q), _subset(est, which == q)) for q in range(4)
                ]
            entry["seconds"] = time.perf_counter() - start
            set_scores["models"][model] = entry
        set_scores["paired"] = paired_differences(set_scores["models"])
        for entry in set_scores["models"].values():
            entry.pop("_counts")
            for quartile in entry.get("per_fwhm_quartile", []):
                quartile.pop("_counts")
        results["scores"][name] = set_scores
    return results


def write_markdown(results: dict, path: Path) -> None:
    lines = []
    for name, set_scores in results["scores"].items():
        lines += [
            f"### {name}: {results['test_sets'][name]}",
            "",
            "| model | F1 | F1 r 21-22 | star/galaxy | median abs dmag r < 21 | r flux coverage "
            "| position coverage |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for model, s in set_scores["models"].items():
            lines.append(
                f"| {model} | {s['f1']:.3f} | {s['f1_per_bin']['21-22']:.3f} | "
                f"{s['star_galaxy_accuracy']:.3f} | {s['median_abs_dmag_r_lt_21']:.3f} | "
                f"{s['coverage_flux_r']:.3f} | {s['coverage_position']:.3f} |"
            )
        lines.append("")
        if set_scores["paired"]:
            lines += ["Paired differences on the same images (bootstrap over images):", ""]
            for what, d in set_scores["paired"].items():
                lines.append(f"- {what}: {d['difference']:+.3f} ± {d['bootstrap_se']:.3f}")
            lines.append("")
        if name == "pool":
            edges = set_scores["fwhm_r_quartile_edges"]
            heads = [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
            for key, title in (
                ("f1_per_bin", "F1 at r 21-22"),
                ("coverage_flux_r", "r flux coverage"),
            ):
                lines += [
                    f"{title} per quartile of the r FWHM (arcsec):",
                    "",
                    "| model | " + " | ".join(heads) + " |",
                    "| --- |" + " --- |" * 4,
                ]
                for model, s in set_scores["models"].items():
                    cells = [
                        q["f1_per_bin"]["21-22"] if key == "f1_per_bin" else q[key]
                        for q in s["per_fwhm_quartile"]
                    ]
                    lines.append(f"| {model} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
                lines.append("")
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pool = results["scores"]["pool"]
    edges = pool["fwhm_r_quartile_edges"]
    centres = [(lo + hi) / 2 for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for model, s in pool["models"].items():
        quartiles = s["per_fwhm_quartile"]
        axes[0].plot(centres, [q["f1_per_bin"]["21-22"] for q in quartiles], "o-", label=model)
        axes[1].plot(centres, [q["median_abs_dmag_r_lt_21"] for q in quartiles], "o-")
        axes[2].plot(centres, [q["coverage_flux_r"] for q in quartiles], "o-", label=model)
    axes[0].set(xlabel="r FWHM (arcsec), pool quartiles", ylabel="F1 at r 21-22")
    axes[1].set(
        xlabel="r FWHM (arcsec), pool quartiles", ylabel="median |dmag|, r < 21", yscale="log"
    )
    axes[2].axhspan(0.85, 0.95, color="0.9")
    axes[2].set(xlabel="r FWHM (arcsec), pool quartiles", ylabel="90 % r-flux interval coverage")
    sets = list(results["scores"])
    models = list(pool["models"])
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        values = [results["scores"][s]["models"][model]["f1"] for s in sets]
        axes[3].bar(np.arange(len(sets)) + j * width, values, width, label=model)
    axes[3].set_xticks(np.arange(len(sets)) + 0.4 - width / 2, sets, rotation=15)
    axes[3].set(ylabel="F1 (r < 22.5, 1 px)", ylim=(0.5, 1.0))
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=[], help="name=checkpoint ...")
    parser.add_argument("--sdss-data", default="../shared/data/sdss")
    parser.add_argument("--n-images", type=int, default=2048, help="images per test set")
    parser.add_argument("--seed", type=int, default=910)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--replot", action="store_true", help="only redraw the tables and plot from --out's JSON"
    )
    args = parser.parse_args()
    if args.replot:
        results = json.loads((args.out / "psf_study.json").read_text())
        write_markdown(results, args.out / "psf_study.md")
        plot(results, args.out / "psf_study.png")
        return
    if not args.models:
        parser.error("--models name=checkpoint ... is required (or --replot)")
    torch.manual_seed(0)
    results = evaluate(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "psf_study.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_markdown(results, args.out / "psf_study.md")
    plot(results, args.out / "psf_study.png")
    print((args.out / "psf_study.md").read_text())


if __name__ == "__main__":
    main()
