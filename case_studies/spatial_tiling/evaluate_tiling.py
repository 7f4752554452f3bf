"""Score crowded models trained with K = 1, 2, 4 colour groups against sep and DAOPHOT-style PSF photometry.

Held-out M2-like fields are simulated from the crowded preset with test-only settings (other
seeds, a fixed PSF place; for two sets a shallower and a steeper luminosity function than any
the models were trained on; for one, stars to r = 12 whose saturated pixels are missing, as
on the real frame). Per method:
F1 within 0.5 px and 0.5 mag (the StarNet/PCAT protocol) and within 1 px, stars with r < 22; for
BLISS also the 90 % interval of the r < 22 count of each field from joint posterior samples,
close pairs of detections at 0.5-1.5 px against the truth's, and the negative log-likelihood of
the true catalogs; for every method, how many true stars brighter than r = 15 it finds whole and
how many detections it puts around them beyond the true stars there (split bright stars).

    python case_studies/spatial_tiling/evaluate_tiling.py \\
        --models K1=outputs/train/crowded_k1-.../checkpoints/best.ckpt K2=... K4=... \\
        --out case_studies/spatial_tiling/results

Needs the psField and frame files of 2583-2-136 (``BLISS_SDSS_DATA`` or ``--sdss-data``) and, for
the DAOPHOT baseline, ``photutils`` (``pip install photutils``; ``--no-daophot`` skips it).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from tqdm import tqdm

from bliss.catalog import FullCatalog
from bliss.catalog.convert import nmgy_per_electron
from bliss.catalog.full import concat_full_catalogs
from bliss.cli.generate import build_simulator
from bliss.encoder.checkpoint import load_encoder
from bliss.encoder.normalizers import saturation_levels
from bliss.metrics import match_full_catalogs
from bliss.metrics.calibration import binned_coverage
from bliss.predict.psf_photometry import nominal_psf_models, refine_star_fluxes
from bliss.predict.saturated_stars import recover_saturated_stars, with_saturated_stars
from bliss.protocols import SurveyImage

sys.path.insert(0, str(Path(__file__).parent))
from baselines import daophot_catalog, sep_catalog  # noqa: E402
from crowded_metrics import (  # noqa: E402
    BrightStarScore,
    DetectionScore,
    bright_star_score,
    close_pairs,
    count_interval,
    detection_score,
)

CONF = Path(__file__).parent / "conf"
MAG_LIMIT = 22.0
PROTOCOLS = {"0.5px_0.5mag": (0.5, 0.5), "1px": (1.0, None)}
INTERVAL = (0.05, 0.95)  # the 90 % interval whose coverage is reported per r bin
CALIBRATION_BINS = [12, 14.5, 18, 19, 20, 21, 22, 23]
BRIGHT_MAG = 15.0  # true stars brighter than this are scored whole or split

#: held-out test sets: overrides of the crowded preset (the training prior is 48 px images,
#: central densities 0.02-1.2 per px², core radii 15-150 px, alpha = 1.0 down to r = 23)
TEST_SETS = {
    "m2_like": [
        "prior.central_density_per_px2=[0.5,1.2]",
        "prior.core_radius_px=[40.0,60.0]",
        "prior.center_offset_px=50.0",
    ],
    "other_lf": [  # shallower luminosity function, fainter floor, a sparser cluster
        "prior.central_density_per_px2=[0.1,0.6]",
        "prior.core_radius_px=[30.0,120.0]",
        "prior.center_offset_px=80.0",
        "prior.star_flux={min_nmgy:0.251,max_nmgy:2512.0,alpha:0.7}",
    ],
    "steep_lf": [  # steeper than any training slope (<= 1.25), stars to r = 23.5, a dense core
        "prior.central_density_per_px2=[0.4,1.0]",
        "prior.core_radius_px=[25.0,80.0]",
        "prior.center_offset_px=60.0",
        "prior.star_flux={min_nmgy:0.251,max_nmgy:1585.0,alpha:1.4}",
    ],
    "bright_m2": [  # m2_like with stars to r = 12, saturated pixels missing (crowded_pass6's prior)
        "prior.central_density_per_px2=[0.5,1.2]",
        "prior.core_radius_px=[40.0,60.0]",
        "prior.center_offset_px=50.0",
    ],
}
#: the preset a test set starts from, where it is not ``crowded``; its
#: ``encoder.normalizer.saturation_electrons`` saturate the test images (NaN, as a real frame's)
EXPERIMENTS = {"bright_m2": "crowded_pass6"}


def compose_test_config(test_set: str, field_px: int, sdss_data: str):
    """The crowded preset with the test set's overrides, ``field_px`` images and one PSF place."""
    os.environ.setdefault("BLISS_SDSS_DATA", sdss_data)
    overrides = [
        f"hydra.searchpath=[file://{CONF.resolve()}]",
        "mode=generate",
        f"experiment={EXPERIMENTS.get(test_set, 'crowded')}",
        f"simulator.image_size={field_px}",
        "simulator.conditions.fwhm_scale=[1.0,1.0]",
        "simulator.conditions.sky_scale=[1.0,1.0]",
        "simulator.conditions.observed.grid=1",  # one place, the frame's centre: one known PSF
        *TEST_SETS[test_set],
    ]
    with initialize_config_module("bliss.conf", version_base="1.3"):
        return compose("config", overrides=overrides)


def saturate(images: torch.Tensor, levels) -> torch.Tensor:
    """``images`` (``b c h w``, electrons) with the pixels at or above a band's level set to NaN.

    A real frame reports saturated pixels as missing; ``levels`` is one count per band, None
    for a band that never saturates, or None for none.
    """
    if levels is None:
        return images
    level = saturation_levels(levels, images.shape[1]).to(images)
    return images.masked_fill(images >= level[None, :, None, None], float("nan"))


def _mag(flux_nmgy: np.ndarray) -> np.ndarray:
    return 22.5 - 2.5 * np.log10(np.clip(flux_nmgy, 1e-6, None))


def _field_catalog(catalog, index: int, band: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (``n 2``) and ``band`` magnitudes of image ``index`` of a full catalog."""
    n = int(catalog["n_sources"][index])
    plocs = catalog["plocs"][index, :n].double().numpy()
    return plocs, _mag(catalog["fluxes"][index, :n, band].double().numpy())


def score_bliss(encoder, batch, n_samples: int, band: int) -> dict:
    """Point-estimate catalogs, joint-sample counts, NLL of the truth, for one batch."""
    inputs = {k: v for k, v in batch.items() if k != "catalog"}
    with torch.no_grad():
        features = encoder.tile_features(inputs)
        nll = float(encoder.nll_from_features(features, batch["catalog"]))  # mean over images
        estimate, params = encoder.infer_from_features(features)
        estimate = encoder.posterior.with_interval_ends(estimate, params, INTERVAL)
        counts = []
        for index in range(features.shape[0]):
            repeated = features[index : index + 1].expand(n_samples, *features.shape[1:])
            samples, _ = encoder.infer_from_features(repeated, sample=True)
            flux = samples["fluxes"][..., band]
            counts.append(
                ((flux > 10 ** (-0.4 * (MAG_LIMIT - 22.5))) & samples.is_on_mask).sum((1, 2, 3))
            )
    return {
        "estimate": estimate.to_full_catalog(),
        "sample_counts": torch.stack(counts).numpy(),
        "nll": nll,
    }


def _survey_image(batch: dict, i: int, magzero: np.ndarray, psf: np.ndarray, cfg) -> SurveyImage:
    """Image ``i`` of a simulated batch as predict sees a frame: its NaNs are saturated pixels."""
    images = batch["images"][i].double().numpy()
    return SurveyImage(
        path=Path(f"field{i}"),
        bands=tuple(cfg.survey.bands),
        images=images,
        background=np.broadcast_to(
            batch["background"][i].double().numpy().reshape(len(magzero), -1, 1), images.shape
        ).copy(),
        psf_fwhm_arcsec=batch["psf_fwhm_arcsec"][i].double().numpy(),
        magzero=magzero,
        wcs=None,
        psf=lambda band, row, col: psf[band],
        saturated=np.isnan(images),
    )


def _per_image(estimate: FullCatalog, refine) -> FullCatalog:
    """``refine(one_image_catalog, index)`` applied to each image of ``estimate``."""
    refined = []
    for i in range(estimate.batch_size):
        one = FullCatalog(
            estimate.height_px, estimate.width_px, {k: v[i : i + 1] for k, v in estimate.items()}
        )
        refined.append(refine(one, i))
    return concat_full_catalogs(refined)


def psf_fit(
    estimate: FullCatalog, batch: dict, magzero: np.ndarray, psf: np.ndarray, cfg
) -> FullCatalog:
    """``estimate`` with every star's fluxes refit by PSF photometry on its positions, per image.

    The crowded-field photometry of predict (:func:`bliss.predict.psf_photometry.refine_star_fluxes`)
    with the test set's own PSF (``psf``: ``c h w``, one place, as the DAOPHOT baseline gets it).
    """
    quantiles = tuple(float(k.split("@")[1]) for k in estimate.keys() if k.startswith("fluxes@"))
    pixel_scale = float(cfg.survey.pixel_scale_arcsec)
    reference_band = list(cfg.survey.bands).index(cfg.survey.reference_band)

    def refine(one: FullCatalog, i: int) -> FullCatalog:
        data = dict(one.items())
        data["prob_galaxy"] = torch.zeros_like(data["fluxes"][..., :1])
        one = FullCatalog(one.height_px, one.width_px, data)
        image = _survey_image(batch, i, magzero, psf, cfg)
        fitted, _ = refine_star_fluxes(
            image, one, quantiles, pixel_scale, reference_band=reference_band
        )
        data = dict(fitted.items())
        data.pop("prob_galaxy")
        return FullCatalog(one.height_px, one.width_px, data)

    return _per_image(estimate, refine)


def saturated_fit(
    estimate: FullCatalog, batch: dict, magzero: np.ndarray, psf: np.ndarray, cfg
) -> FullCatalog:
    """``estimate`` with each blob of saturated (NaN) pixels cataloged as one star, per image.

    Predict's step (:mod:`bliss.predict.saturated_stars`) with the test set's own PSF.
    """
    quantiles = tuple(float(k.split("@")[1]) for k in estimate.keys() if k.startswith("fluxes@"))
    reference_band = list(cfg.survey.bands).index(cfg.survey.reference_band)

    def refine(one: FullCatalog, i: int) -> FullCatalog:
        image = _survey_image(batch, i, magzero, psf, cfg)
        models = nominal_psf_models(image, float(cfg.survey.pixel_scale_arcsec), 3.5)
        stars = recover_saturated_stars(image, one, models, reference_band)
        return with_saturated_stars(one, stars, quantiles)

    return _per_image(estimate, refine)


def evaluate(args: argparse.Namespace) -> dict:
    """Every method on every test set; returns the results (also written to ``--out``)."""
    encoders = {}
    for spec in args.models:
        name, path = spec.split("=", 1)
        encoders[name], _ = load_encoder(path)
    results: dict = {"settings": vars(args), "test_sets": {}}
    for test_set in args.test_sets:
        cfg = compose_test_config(test_set, args.field_px, args.sdss_data)
        levels = cfg.encoder.normalizer.get("saturation_electrons")
        simulator = build_simulator(cfg)
        band = list(cfg.survey.bands).index(cfg.survey.reference_band)
        table = simulator.conditions.observed
        psf = table.psf_images[0, band]
        fwhm_px = float(table.psf_fwhm_arcsec[0, band]) / cfg.survey.pixel_scale_arcsec
        nmgy = nmgy_per_electron(float(simulator.magzero[band]))
        fitted = {f"{name}+fit": name for name in encoders} if args.psf_fit else {}
        if args.saturated_stars:
            fitted.update({f"{name}+sat": name for name in encoders})
        magzero = np.asarray(simulator.magzero, dtype=np.float64)
        methods = [*encoders, *fitted, "sep"] + ([] if args.no_daophot else ["daophot"])
        scores = {m: {p: DetectionScore() for p in PROTOCOLS} for m in methods}
        bright_scores = {m: BrightStarScore() for m in methods}
        pairs = {m: [0, 0] for m in [*methods, "truth"]}  # close pairs, sources (r < 22)
        covered = {m: [] for m in encoders}
        widths = {m: [] for m in encoders}
        offsets = {m: [] for m in encoders}  # (median sample count - true count) / true count
        nll = {m: [] for m in encoders}
        catalogs = {m: [] for m in [*encoders, *fitted, "truth"]}  # for the interval coverage
        seconds = {m: 0.0 for m in methods}
        example = None
        for start in tqdm(range(0, args.fields, args.batch), desc=test_set, unit="batch"):
            n = min(args.batch, args.fields - start)
            batch = simulator.simulate(n, seed=args.seed + start)
            batch["images"] = saturate(batch["images"], levels)
            full_truth = _with_star_type(batch["catalog"].to_full_catalog())
            catalogs["truth"].append(full_truth)
            truths = [_field_catalog(full_truth, i, band) for i in range(n)]
            sky = batch["background"][:, band].numpy()
            images = batch["images"][:, band].numpy()
            # the baselines get the sky in missing pixels: nothing to detect there
            images = np.where(np.isnan(images), sky[:, None, None], images)
            per_method = {}
            for name, encoder in encoders.items():
                tic = time.perf_counter()
                out = score_bliss(encoder, batch, args.samples, band)
                seconds_bliss = time.perf_counter() - tic
                seconds[name] += seconds_bliss
                nll[name].append(out["nll"] * n)
                catalogs[name].append(out["estimate"])
                per_method[name] = [_field_catalog(out["estimate"], i, band) for i in range(n)]
                if args.psf_fit:
                    tic = time.perf_counter()
                    refined = psf_fit(out["estimate"], batch, magzero, table.psf_images[0], cfg)
                    seconds[f"{name}+fit"] += time.perf_counter() - tic + seconds_bliss
                    catalogs[f"{name}+fit"].append(refined)
                    per_method[f"{name}+fit"] = [_field_catalog(refined, i, band) for i in range(n)]
                if args.saturated_stars:
                    tic = time.perf_counter()
                    refined = saturated_fit(
                        out["estimate"], batch, magzero, table.psf_images[0], cfg
                    )
                    seconds[f"{name}+sat"] += time.perf_counter() - tic + seconds_bliss
                    catalogs[f"{name}+sat"].append(refined)
                    per_method[f"{name}+sat"] = [_field_catalog(refined, i, band) for i in range(n)]
                for i in range(n):
                    true_count = int((truths[i][1] < MAG_LIMIT).sum())
                    low, high = count_interval(out["sample_counts"][i])
                    covered[name].append(low <= true_count <= high)
                    widths[name].append(high - low)
                    median = float(np.median(out["sample_counts"][i]))
                    offsets[name].append((median - true_count) / max(true_count, 1))
            for name, runner in (("sep", sep_catalog), ("daophot", daophot_catalog)):
                if name not in methods:
                    continue
                tic = time.perf_counter()
                found = []
                for i in range(n):
                    if name == "sep":
                        plocs, flux = runner(images[i], float(sky[i]))
                    else:
                        plocs, flux = runner(images[i], float(sky[i]), psf, fwhm_px)
                    found.append((plocs, _mag(flux * nmgy)))
                seconds[name] += time.perf_counter() - tic
                per_method[name] = found
            for i in range(n):
                true_plocs, true_mag = truths[i]
                bright = true_mag < MAG_LIMIT
                pairs["truth"][0] += close_pairs(true_plocs[bright])
                pairs["truth"][1] += int(bright.sum())
                for name, found in per_method.items():
                    plocs, mag = found[i]
                    bright_scores[name] += bright_star_score(
                        true_plocs, true_mag, plocs, mag, BRIGHT_MAG, faint_mag=MAG_LIMIT
                    )
                    for protocol, (dist, dmag) in PROTOCOLS.items():
                        scores[name][protocol] += detection_score(
                            true_plocs, true_mag, plocs, mag, dist, dmag, MAG_LIMIT
                        )
                    keep = mag < MAG_LIMIT
                    pairs[name][0] += close_pairs(plocs[keep])
                    pairs[name][1] += int(keep.sum())
            if example is None:
                example = {"image": images[0], "truth": truths[0]}
                example.update({m: per_method[m][0] for m in per_method})
        summary = {}
        for name in methods:
            entry = {
                protocol: {
                    "f1": s.f1,
                    "precision": s.precision,
                    "recall": s.recall,
                    "n_true": s.n_true,
                    "n_est": s.n_est,
                }
                for protocol, s in scores[name].items()
            }
            entry["close_pairs_per_1000"] = 1000 * pairs[name][0] / max(pairs[name][1], 1)
            entry["bright_stars"] = {
                "n": bright_scores[name].n,
                "found_share": bright_scores[name].found_share,
                "excess_per_star": bright_scores[name].mean_excess,
            }
            entry["seconds_per_field"] = seconds[name] / args.fields
            if name in fitted:
                entry["calibration"] = interval_coverage_by_bin(
                    catalogs["truth"], catalogs[name], tuple(cfg.survey.bands), band
                )
            if name in encoders:
                entry["count_coverage90"] = float(np.mean(covered[name]))
                entry["count_interval_width"] = float(np.mean(widths[name]))
                entry["count_median_offset"] = float(np.mean(offsets[name]))
                entry["nll_per_field"] = float(sum(nll[name]) / args.fields)
                entry["calibration"] = interval_coverage_by_bin(
                    catalogs["truth"], catalogs[name], tuple(cfg.survey.bands), band
                )
            summary[name] = entry
        summary["truth"] = {
            "close_pairs_per_1000": 1000 * pairs["truth"][0] / max(pairs["truth"][1], 1),
            "stars_r_lt_22_per_field": pairs["truth"][1] / args.fields,
        }
        results["test_sets"][test_set] = {
            "config": OmegaConf.to_container(cfg.prior, resolve=True),
            "scores": summary,
        }
        _plot_example(example, Path(args.out) / f"field_{test_set}.png", test_set)
    return results


def _with_star_type(catalog: FullCatalog) -> FullCatalog:
    """The crowded prior draws only stars: ``source_type`` 0 for the per-type coverage table."""
    if "source_type" in catalog:
        return catalog
    data = dict(catalog.items())
    data["source_type"] = torch.zeros_like(catalog["fluxes"][..., :1])
    return FullCatalog(catalog.height_px, catalog.width_px, data)


def interval_coverage_by_bin(
    truths: list[FullCatalog], estimates: list[FullCatalog], bands: tuple[str, ...], band: int
) -> list[dict]:
    """Coverage of the 90 % flux and position intervals of matched stars (1 px), per true r bin."""
    truth, estimate = concat_full_catalogs(truths), concat_full_catalogs(estimates)
    matches = match_full_catalogs(truth, estimate, max_dist_px=1.0)
    rows = binned_coverage(
        truth, estimate, matches, ref_band=band, bands=bands, mag_bins=CALIBRATION_BINS
    )
    return [row for row in rows if row["type"] == "star"]


def _plot_example(example: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in example if k not in ("image", "truth")]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4.3), squeeze=False)
    image = example["image"]
    low, high = np.percentile(image, [5, 99.5])
    true_plocs, true_mag = example["truth"]
    bright = true_mag < MAG_LIMIT
    for ax, name in zip(axes[0], names, strict=True):
        ax.imshow(np.arcsinh((image - low) / (high - low) * 10), origin="lower", cmap="gray_r")
        ax.scatter(
            true_plocs[bright, 1] - 0.5,
            true_plocs[bright, 0] - 0.5,
            s=14,
            marker="o",
            facecolors="none",
            edgecolors="tab:blue",
            lw=0.7,
            label="truth r < 22",
        )
        plocs, mag = example[name]
        keep = mag < MAG_LIMIT
        ax.scatter(
            plocs[keep, 1] - 0.5,
            plocs[keep, 0] - 0.5,
            s=10,
            marker="x",
            c="tab:red",
            lw=0.7,
            label=f"{name} r < 22",
        )
        ax.set_title(f"{title}: {name}")
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(results: dict, path: Path) -> None:
    """One table per test set."""
    lines = []
    for test_set, entry in results["test_sets"].items():
        scores = entry["scores"]
        truth = scores.pop("truth")
        lines += [
            f"### {test_set} ({truth['stars_r_lt_22_per_field']:.0f} stars with r < 22 per field; "
            f"truth: {truth['close_pairs_per_1000']:.0f} close pairs per 1000)",
            "",
            "| method | F1 0.5 px, 0.5 mag | P / R | F1 1 px | close pairs / 1000 "
            f"| r < {BRIGHT_MAG:g} found (excess) "
            "| count cov90 (width, median offset) | NLL / field | s / field |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, s in scores.items():
            strict, loose = s["0.5px_0.5mag"], s["1px"]
            cov = (
                f"{s['count_coverage90']:.2f} ({s['count_interval_width']:.0f}, "
                f"{s['count_median_offset']:+.1%})"
                if "count_coverage90" in s
                else ""
            )
            nll = f"{s['nll_per_field']:.0f}" if "nll_per_field" in s else ""
            b = s["bright_stars"]
            bright = (
                f"{b['found_share']:.2f} ({b['excess_per_star']:+.1f}; n={b['n']})"
                if b["n"]
                else ""
            )
            lines.append(
                f"| {name} | {strict['f1']:.3f} | {strict['precision']:.2f} / {strict['recall']:.2f} "
                f"| {loose['f1']:.3f} | {s['close_pairs_per_1000']:.0f} | {bright} | {cov} | {nll} "
                f"| {s['seconds_per_field']:.2f} |"
            )
        scores["truth"] = truth
        lines += [
            "",
            "90 % interval coverage of matched stars (1 px) per true r bin: r flux / position "
            "(row, col) / median r bias (mag)",
            "",
            "| method | " + " | ".join(f"r {lo:g}-{hi:g}" for lo, hi in _bin_pairs()) + " |",
            "| --- |" + " --- |" * (len(CALIBRATION_BINS) - 1),
        ]
        for name, s in scores.items():
            if "calibration" in s:
                cells = [
                    f"{row['coverage_flux_r']:.2f} / {row['coverage_y']:.2f}, "
                    f"{row['coverage_x']:.2f} / {row['mag_bias_median']:+.3f} (n={row['n']})"
                    if row["n"]
                    else "-"
                    for row in s["calibration"]
                ]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    path.write_text("\n".join(lines))


def _bin_pairs() -> list[tuple[float, float]]:
    return list(zip(CALIBRATION_BINS[:-1], CALIBRATION_BINS[1:], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="NAME=checkpoint ...")
    parser.add_argument("--test-sets", nargs="+", default=list(TEST_SETS), choices=list(TEST_SETS))
    parser.add_argument("--fields", type=int, default=32)
    parser.add_argument("--field-px", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=100, help="joint samples per field")
    parser.add_argument(
        "--seed", type=int, default=900_000, help="first batch's seed (training uses 13)"
    )
    parser.add_argument("--sdss-data", default=os.environ.get("BLISS_SDSS_DATA", "data/sdss"))
    parser.add_argument("--no-daophot", action="store_true")
    parser.add_argument(
        "--psf-fit",
        action="store_true",
        help="also score each model with its star fluxes refit by PSF photometry (NAME+fit)",
    )
    parser.add_argument(
        "--saturated-stars",
        action="store_true",
        help="also score each model with its saturated cores cataloged as stars (NAME+sat)",
    )
    parser.add_argument("--out", default="case_studies/spatial_tiling/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = evaluate(args)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=float))
    tmp.replace(out / "results.json")
    write_markdown(results, out / "results.md")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
