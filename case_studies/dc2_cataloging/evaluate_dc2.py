"""Catalog LSST-depth DC2-like fields with bliss, sep and photutils deblending; score each.

Two test sets, drawn from the ``dc2_like`` prior on the ten-year ``lsst_coadd`` survey, or on
single 30 s visits with ``--survey lsst`` (seeds away from training): ``in_prior`` (bulge + disk
galaxies, as trained) and ``sersic`` (the same sky with every galaxy drawn as COSMOS's
single-Sersic fit of its own index: a profile family the model never saw). Methods on the same
images: bliss (a checkpoint for the survey's bands), ``sep``
(:func:`bliss.evaluate.baseline.sep_catalog`) and photutils segmentation with
``deblend_sources`` plus GalSim HSM shapes (:mod:`dc2_baselines`).

Scores (matching within ``--match-arcsec``, one-to-one):

* F1 per true / estimated r bin (to r 26.5 on the coadd, 24.7 on a visit), and for sources in
  blends (a true source with another within 1 arcsec; estimated sources whose nearest true
  source is such a one);
* star/galaxy accuracy of matched sources at r < 24 (23 on a visit);
* median |Δmag| in r per bin;
* e1 / e2 RMSE of matched true galaxies at r < 24 (23 on a visit; bliss's ``ellipticity``; HSM
  on the photutils detections, over those it measures, with the share it measures), and over
  the galaxies both measure (the same galaxies for both);
* 90 % interval coverage of bliss's r flux and e1 / e2 (and sep's Gaussian flux errors).

    python case_studies/dc2_cataloging/evaluate_dc2.py --checkpoint CKPT --n-fields 20 \\
        [--survey lsst] --out case_studies/dc2_cataloging/results [HYDRA_OVERRIDES...]

Further arguments are Hydra overrides of the simulation (e.g.
``prior.galaxy_shape_catalog.path=...``).

Needs the COSMOS catalog of the ``fpfs`` wheel (``pip install "bliss-toolkit[weak_lensing]"``)
and photutils. Writes ``dc2_<set>.json`` and ``dc2.md`` in ``--out``.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from scipy.spatial import cKDTree
from tqdm import tqdm

from bliss.catalog import GALAXY_KEYS, SERSIC_KEY
from bliss.catalog.ellipticity import galaxy_ellipticity
from bliss.catalog.io import column_values
from bliss.cli.generate import build_simulator
from bliss.encoder.checkpoint import load_encoder
from bliss.errors import BlissConfigError
from bliss.evaluate.baseline import sep_catalog
from bliss.metrics import match_catalogs
from bliss.predict.model import model_conditions
from bliss.predict.predictor import PredictorSettings, build_predictor
from bliss.simulator.field import write_simulated_field
from bliss.simulator.render import moffat_psf

sys.path.insert(0, str(Path(__file__).parent))
from dc2_baselines import hsm_shapes, photutils_catalog  # noqa: E402

SETS = {
    "in_prior": [],
    "sersic": ["prior.galaxy_shape_catalog.profile=sersic", "simulator=galsim"],
}
SEED = 7_000_001
BLEND_ARCSEC = 1.0


@dataclasses.dataclass(frozen=True)
class Depth:
    """The r bins of one survey's depth: F1 and |dmag| per bin, types and shapes below a limit."""

    mag_bins: tuple[float, ...]
    shape_max_mag: float


# a visit's r-band 5 sigma point-source depth is ~24.6 (survey=lsst), the coadd's ~27.4
DEPTHS = {
    "lsst_coadd": Depth((16.0, 22.0, 23.0, 24.0, 25.7, 26.5), 24.0),
    "lsst": Depth((16.0, 21.0, 22.0, 23.0, 24.0, 24.7), 23.0),
}
QUANTILES = (0.05, 0.95)
METHODS = ("bliss", "sep", "photutils")


def simulate(
    directory: Path, n_fields: int, name: str, image_size: int, overrides: list[str], survey: str
) -> tuple:
    """Fields and truth tables of one set (kept between runs), and the composed config.

    ``overrides`` are further Hydra overrides of the simulation (e.g. a COSMOS catalog path).
    """
    size = f"simulator.image_size={image_size}"
    with initialize_config_module("bliss.conf", version_base="1.3"):
        base = ["mode=simulate", f"survey={survey}", "prior=dc2_like", size]
        cfg = compose("config", overrides=[*base, *SETS[name], *overrides])
    simulator = build_simulator(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    pairs = []
    for index in range(n_fields):
        image, truth = directory / f"field_{index:03d}.fits", directory / f"truth_{index:03d}.fits"
        if not (image.exists() and truth.exists()):
            write_simulated_field(simulator, SEED + index, image, truth)
        pairs.append((image, truth))
    return pairs, cfg


def truth_arrays(table: Table, bands: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Positions (``(row, col)``, centres at +0.5), fluxes, types and ellipticities of a truth table."""
    galaxy = column_values(table, "source_type") > 0.5
    params = np.stack([column_values(table, k) for k in GALAXY_KEYS], -1)
    sersic = column_values(table, SERSIC_KEY) if SERSIC_KEY in table.colnames else 4.0
    e = np.full((len(table), 2), np.nan)
    if galaxy.any():
        n = sersic[galaxy] if np.ndim(sersic) else sersic
        e[galaxy] = galaxy_ellipticity(params[galaxy], n)
    return {
        "plocs": np.stack([column_values(table, "y") + 0.5, column_values(table, "x") + 0.5], -1),
        "fluxes": np.stack([column_values(table, f"flux_{b}") for b in bands], -1),
        "galaxy": galaxy,
        "e": e,
    }


def catalog_arrays(catalog) -> dict[str, np.ndarray]:  # noqa: ANN001
    """The same arrays from a one-image catalog (the predictor's or ``sep_catalog``'s), plus
    its flux intervals and, where it has them, its ellipticities and their intervals."""
    n = int(catalog["n_sources"][0])
    out = {
        "plocs": catalog["plocs"][0, :n].numpy().astype(np.float64),
        "fluxes": catalog["fluxes"][0, :n].numpy().astype(np.float64),
        "flux_lo": catalog[f"fluxes@{QUANTILES[0]:g}"][0, :n].numpy(),
        "flux_hi": catalog[f"fluxes@{QUANTILES[1]:g}"][0, :n].numpy(),
        "galaxy": catalog["prob_galaxy"][0, :n, 0].numpy() > 0.5,
    }
    if "ellipticity" in catalog:
        out["e"] = catalog["ellipticity"][0, :n].numpy().astype(np.float64)
        out["e_lo"] = catalog[f"ellipticity@{QUANTILES[0]:g}"][0, :n].numpy()
        out["e_hi"] = catalog[f"ellipticity@{QUANTILES[1]:g}"][0, :n].numpy()
    return out


def blended(plocs: np.ndarray, radius_px: float) -> np.ndarray:
    """Which sources have another within ``radius_px``. Shape ``n``."""
    if len(plocs) < 2:
        return np.zeros(len(plocs), bool)
    distance, _ = cKDTree(plocs).query(plocs, k=2)
    return distance[:, 1] <= radius_px


def score_field(truth: dict, est: dict, ref: int, match_px: float, blend_px: float) -> dict:
    """Per-source records of one field for one method (pooled over fields by :func:`summarise`)."""
    true_idx, est_idx = match_catalogs(
        torch.from_numpy(truth["plocs"]).float(),
        torch.from_numpy(est["plocs"]).float(),
        max_dist_px=match_px,
    )
    true_idx, est_idx = true_idx.numpy(), est_idx.numpy()
    true_matched = np.zeros(len(truth["plocs"]), bool)
    est_matched = np.zeros(len(est["plocs"]), bool)
    true_matched[true_idx], est_matched[est_idx] = True, True
    true_blend = blended(truth["plocs"], blend_px)
    est_blend = np.zeros(len(est["plocs"]), bool)
    if len(est["plocs"]) and len(truth["plocs"]):
        distance, nearest = cKDTree(truth["plocs"]).query(est["plocs"])
        est_blend = (distance <= 2 * match_px) & true_blend[nearest]
    with np.errstate(divide="ignore", invalid="ignore"):
        true_mag = 22.5 - 2.5 * np.log10(truth["fluxes"][:, ref])
        est_mag = 22.5 - 2.5 * np.log10(est["fluxes"][:, ref])
    pairs = {
        "true_index": true_idx,
        "true_mag": true_mag[true_idx],
        "dmag": est_mag[est_idx] - true_mag[true_idx],
        "true_galaxy": truth["galaxy"][true_idx],
        "est_galaxy": est["galaxy"][est_idx],
    }
    if "flux_lo" in est:
        f = truth["fluxes"][true_idx, ref]
        pairs["flux_cover"] = (est["flux_lo"][est_idx, ref] <= f) & (
            f <= est["flux_hi"][est_idx, ref]
        )
    if "e" in est:
        pairs["e_err"] = est["e"][est_idx] - truth["e"][true_idx]
        if "e_lo" in est:
            e = truth["e"][true_idx]
            pairs["e_cover"] = (est["e_lo"][est_idx] <= e) & (e <= est["e_hi"][est_idx])
    return {
        "true_mag_all": true_mag,
        "true_matched": true_matched,
        "true_blend": true_blend,
        "est_mag_all": est_mag,
        "est_matched": est_matched,
        "est_blend": est_blend,
        **{f"pair_{k}": v for k, v in pairs.items()},
    }


def mark_common_shapes(records: dict[str, dict]) -> None:
    """Mark, in one field's records of every method, the pairs whose true source every method
    with shapes matched and measured (``pair_e_common``): HSM measures only resolved galaxies,
    so an RMSE over each method's own pairs compares different galaxies."""
    measured = [
        set(r["pair_true_index"][np.isfinite(r["pair_e_err"]).all(axis=1)])
        for r in records.values()
        if "pair_e_err" in r
    ]
    common = set.intersection(*measured) if measured else set()
    for r in records.values():
        if "pair_e_err" in r:
            r["pair_e_common"] = np.isin(r["pair_true_index"], sorted(common))


def _f1(cat: dict, true: np.ndarray | slice, est: np.ndarray | slice) -> float:
    """F1 of the true sources ``true`` (recall) and the estimated ones ``est`` (precision)."""
    matched_true, matched_est = cat["true_matched"][true], cat["est_matched"][est]
    recall = matched_true.mean() if len(matched_true) else 0.0
    precision = matched_est.mean() if len(matched_est) else 0.0
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


def summarise(records: list[dict], depth: Depth = DEPTHS["lsst_coadd"]) -> dict:
    """Pool per-field records into the study's scores."""
    cat = {k: np.concatenate([r[k] for r in records]) for k in records[0]}
    out: dict = {"n_true": int(len(cat["true_matched"])), "n_est": int(len(cat["est_matched"]))}
    out["f1"] = _f1(cat, slice(None), slice(None))
    out["f1_per_bin"], out["dmag_per_bin"] = [], []
    for low, high in zip(depth.mag_bins[:-1], depth.mag_bins[1:], strict=True):
        t = (cat["true_mag_all"] >= low) & (cat["true_mag_all"] < high)
        e = (cat["est_mag_all"] >= low) & (cat["est_mag_all"] < high)
        out["f1_per_bin"].append(_f1(cat, t, e))
        p = (cat["pair_true_mag"] >= low) & (cat["pair_true_mag"] < high)
        out["dmag_per_bin"].append(
            float(np.median(np.abs(cat["pair_dmag"][p]))) if p.any() else float("nan")
        )
    tb, eb = cat["true_blend"], cat["est_blend"]
    out["f1_blends"] = _f1(cat, tb, eb)
    # the same two above the depth's faintest bin edge: most of a visit's true sources are
    # far below its depth, and every method misses them alike
    t, e = cat["true_mag_all"] < depth.mag_bins[-1], cat["est_mag_all"] < depth.mag_bins[-1]
    out["f1_to_depth"] = _f1(cat, t, e)
    out["n_true_blended"] = int(tb.sum())
    tb, eb = tb & t, eb & e
    out["f1_blends_to_depth"] = _f1(cat, tb, eb)
    out["n_true_blended_to_depth"] = int(tb.sum())
    bright = cat["pair_true_mag"] < depth.shape_max_mag
    out["star_galaxy_accuracy"] = (
        float(np.mean(cat["pair_true_galaxy"][bright] == cat["pair_est_galaxy"][bright]))
        if bright.any()
        else float("nan")
    )
    if "pair_flux_cover" in cat:
        out["flux_coverage90"] = float(np.mean(cat["pair_flux_cover"]))
    if "pair_e_err" in cat:
        galaxies = bright & cat["pair_true_galaxy"]
        err = cat["pair_e_err"][galaxies]
        measured = np.isfinite(err).all(axis=1)
        out["e_measured_share"] = float(np.mean(measured)) if len(measured) else float("nan")
        nan = float("nan")
        out["e_rmse"] = _rmse(err, measured)
        if "pair_e_common" in cat:
            common = cat["pair_e_common"][galaxies]
            out["e_common_count"] = int(common.sum())
            out["e_rmse_common"] = _rmse(err, common)
        if "pair_e_cover" in cat:
            cover = cat["pair_e_cover"][galaxies][measured]
            out["e_coverage90"] = [
                float(np.mean(cover[:, k])) if len(cover) else nan for k in range(2)
            ]
    return out


def _rmse(err: np.ndarray, selected: np.ndarray) -> list[float]:
    """RMSE of e1 and e2 over the ``selected`` rows of ``err`` (``n 2``); NaN where none are."""
    if not selected.any():
        return [float("nan")] * 2
    return [float(np.sqrt(np.mean(err[selected, k] ** 2))) for k in range(2)]


def table(results: dict, depth: Depth) -> str:
    """Markdown: one block per set, a row per score and a column per method."""
    bins = list(zip(depth.mag_bins[:-1], depth.mag_bins[1:], strict=True))
    lines = []
    for name, by_method in results.items():
        lines += [
            f"### {name}",
            "",
            "| score | " + " | ".join(by_method) + " |",
            "| --- |" + " --- |" * len(by_method),
        ]
        rows = [("F1", lambda r: f"{r['f1']:.3f}")]
        for j, (low, high) in enumerate(bins):
            rows.append((f"F1, r {low:g}-{high:g}", lambda r, j=j: f"{r['f1_per_bin'][j]:.3f}"))
        rows.append(("F1, blended sources", lambda r: f"{r['f1_blends']:.3f}"))
        limit = depth.mag_bins[-1]
        rows.append((f"F1, r < {limit:g}", lambda r: f"{r['f1_to_depth']:.3f}"))
        rows.append(
            (f"F1, blended sources, r < {limit:g}", lambda r: f"{r['f1_blends_to_depth']:.3f}")
        )
        rows.append(
            (
                f"star/galaxy accuracy, r < {depth.shape_max_mag:g}",
                lambda r: f"{r['star_galaxy_accuracy']:.3f}",
            )
        )
        for j, (low, high) in enumerate(bins):
            rows.append(
                (
                    f"median abs dmag, r {low:g}-{high:g}",
                    lambda r, j=j: f"{r['dmag_per_bin'][j]:.3f}",
                )
            )
        rows.append(
            (
                f"e1 / e2 RMSE, galaxies r < {depth.shape_max_mag:g}",
                lambda r: (
                    "/".join(f"{v:.3f}" for v in r["e_rmse"])
                    + f" ({r['e_measured_share']:.0%} measured)"
                    if "e_rmse" in r
                    else "-"
                ),
            )
        )
        rows.append(
            (
                f"e1 / e2 RMSE, galaxies r < {depth.shape_max_mag:g} every method measured",
                lambda r: (
                    "/".join(f"{v:.3f}" for v in r["e_rmse_common"]) + f" ({r['e_common_count']})"
                    if "e_rmse_common" in r
                    else "-"
                ),
            )
        )
        rows.append(
            (
                "r flux 90 % coverage",
                lambda r: f"{r['flux_coverage90']:.3f}" if "flux_coverage90" in r else "-",
            )
        )
        rows.append(
            (
                "e1 / e2 90 % coverage",
                lambda r: (
                    "/".join(f"{v:.3f}" for v in r["e_coverage90"]) if "e_coverage90" in r else "-"
                ),
            )
        )
        for label, cell in rows:
            lines.append(f"| {label} | " + " | ".join(cell(r) for r in by_method.values()) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a model for the survey's ugrizy bands")
    parser.add_argument(
        "--survey", choices=list(DEPTHS), default="lsst_coadd", help="ten-year coadd or one visit"
    )
    parser.add_argument("--n-fields", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=128, help="pixels (0.2 arcsec)")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--match-arcsec", type=float, default=0.5)
    parser.add_argument(
        "--network-fluxes",
        action="store_true",
        help="the network's galaxy fluxes (predict.galaxy_photometry=false), not model fits",
    )
    parser.add_argument("--out", default="outputs/dc2_cataloging")
    args, overrides = parser.parse_known_args(argv)
    names = args.sets.split(",")
    if unknown := [n for n in names if n not in SETS]:
        raise BlissConfigError(f"--sets: unknown {unknown}; expected names from {list(SETS)}.")
    depth = DEPTHS[args.survey]
    encoder, model_config = load_encoder(args.checkpoint)
    model = model_conditions(tuple(encoder.bands), model_config)
    results: dict = {}
    out = Path(args.out)
    for name in names:
        pairs, cfg = simulate(
            out / name, args.n_fields, name, args.image_size, overrides, args.survey
        )
        survey = instantiate(cfg.survey)
        if tuple(encoder.bands) != tuple(survey.bands):
            raise BlissConfigError(
                f"{args.checkpoint} is for bands {list(encoder.bands)}, the test fields have "
                f"{list(survey.bands)}; pass a model trained for survey={args.survey}."
            )
        settings = PredictorSettings(galaxy_photometry=not args.network_fluxes)
        predictor = build_predictor(settings, encoder, model, False, survey)
        scale = survey.pixel_scale_arcsec
        ref = survey.bands.index(survey.reference_band)
        match_px, blend_px = args.match_arcsec / scale, BLEND_ARCSEC / scale
        records: dict[str, list] = {m: [] for m in METHODS}
        for image_path, truth_path in tqdm(pairs, desc=name, unit="field"):
            image = survey.read_image(image_path, tuple(encoder.bands))
            truth = truth_arrays(Table.read(truth_path), tuple(survey.bands))
            ours = catalog_arrays(predictor.predict(image, quantiles=QUANTILES))
            sep = catalog_arrays(
                sep_catalog(
                    image, survey.reference_band, scale, survey.psf_beta, quantiles=QUANTILES
                )
            )
            photo = photutils_catalog(image, survey.reference_band, scale)
            psf = moffat_psf(float(image.psf_fwhm_arcsec[ref]), survey.psf_beta)
            psf_image = psf.drawImage(nx=25, ny=25, scale=scale).array
            photo["e"] = hsm_shapes(
                image,
                survey.reference_band,
                psf_image,
                photo["plocs"],
                photo["segmentation"],
                photo["label"],
                scale,
            )
            field = {
                method: score_field(truth, est, ref, match_px, blend_px)
                for method, est in (("bliss", ours), ("sep", sep), ("photutils", photo))
            }
            mark_common_shapes(field)
            for method, record in field.items():
                records[method].append(record)
        results[name] = {m: summarise(r, depth) for m, r in records.items()}
        (out / f"dc2_{name}.json").write_text(json.dumps(results[name], indent=1))
    text = table(results, depth)
    (out / "dc2.md").write_text(text)
    plot(results, out / "dc2.png", depth)
    print(text)
    return results


def plot(results: dict, path: Path, depth: Depth) -> None:
    """F1 and median |dmag| per r bin, per method and test set, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    edges = depth.mag_bins
    centres = [(lo + hi) / 2 for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    for name, styles in zip(results, ("-", "--"), strict=False):
        for method, colour in zip(METHODS, ("C0", "C1", "C2"), strict=True):
            scores = results[name][method]
            label = f"{method}, {name}"
            axes[0].plot(
                centres, scores["f1_per_bin"], styles, color=colour, marker="o", label=label
            )
            axes[1].plot(
                centres, scores["dmag_per_bin"], styles, color=colour, marker="o", label=label
            )
    axes[0].set_ylabel("F1 (matching within 0.5 arcsec)")
    axes[1].set_ylabel("median |dmag| (r)")
    axes[1].set_yscale("log")
    for axis in axes:
        axis.set_xlabel("r magnitude (bin centre)")
    axes[0].legend(fontsize=7)
    figure.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
