"""Shear and convergence maps: the NPE posterior per coarse tile against averaged HSM shapes.

Test fields are drawn from the ``shear_map`` preset (an NFW cluster anywhere near the image
centre). For each 32 px coarse tile the NPE gives a posterior of the mean reduced shear and
convergence; the baseline is the classical smoothed-ellipticity map, REGAUSS shapes of the sep
detections averaged over the tile (``hsm_baseline.py``). Reported: Pearson r between estimate and
truth over all tiles (pooled) and per image, the RMSE and that of the zero map, and the coverage
of the NPE's central intervals at 19 levels. Usage (from the repository root)::

    python case_studies/weak_lensing/evaluate_maps.py --checkpoint CKPT --n-fields 200
"""

import argparse
import json
import sys
from pathlib import Path

import galsim
import numpy as np
import torch
from tqdm import tqdm

from bliss.cli.generate import build_simulator
from bliss.encoder.checkpoint import load_encoder
from bliss.metrics.shear import map_correlation

sys.path.insert(0, str(Path(__file__).parent))
from evaluate_shear import LEVELS, compose_preset, coverage, plot_coverage  # noqa: E402
from hsm_baseline import hsm_region_shear  # noqa: E402


@torch.no_grad()
def npe_maps(encoder, batch: dict, batch_size: int = 32) -> dict[str, dict[str, np.ndarray]]:  # noqa: ANN001
    """Posterior mean and sd of every region factor (``n hr wr d``), by name."""
    out: dict[str, dict[str, list]] = {}
    for start in range(0, len(batch["images"]), batch_size):
        part = {
            k: v[start : start + batch_size]
            for k, v in batch.items()
            if isinstance(v, torch.Tensor)
        }
        for name, params in encoder.region_params(encoder.tile_features(part)).items():
            loc, scale = encoder.regions[name].factor._loc_scale(params)
            entry = out.setdefault(name, {"mean": [], "sigma": []})
            entry["mean"].append(loc)
            entry["sigma"].append(scale)
    return {n: {k: torch.cat(v).numpy() for k, v in e.items()} for n, e in out.items()}


def hsm_maps(batch: dict, survey, region_px: int) -> np.ndarray:  # noqa: ANN001
    """The smoothed-ellipticity shear map of every image (``n hr wr 2``, NaN for empty tiles)."""
    scale = survey.pixel_scale_arcsec
    maps = []
    for index in tqdm(range(len(batch["images"])), desc="hsm", unit="image"):
        fwhm = float(batch["psf_fwhm_arcsec"][index, 0])
        psf = galsim.Moffat(beta=survey.psf_beta, fwhm=fwhm).drawImage(nx=25, ny=25, scale=scale)
        result = hsm_region_shear(
            batch["images"][index, 0].double().numpy(),
            float(batch["background"][index, 0]),
            psf.array / psf.array.sum(),
            scale,
            region_px,
        )
        maps.append(result["shear"])
    return np.stack(maps)


def _scores(estimate: np.ndarray, truth: np.ndarray) -> dict:
    """Correlation and RMSE per shear component over the tiles where the estimate is finite."""
    out = {}
    for component in range(truth.shape[-1]):
        est, true = estimate[..., component], truth[..., component]
        ok = np.isfinite(est)
        filled = np.where(ok, est, 0.0)  # an empty tile: no shear seen
        scores = map_correlation(filled, true)
        out[f"component_{component + 1}"] = scores | {"empty_tiles": float(1 - ok.mean())}
    return out


def evaluate(checkpoint: str, n_fields: int, seed: int, with_hsm: bool) -> dict:
    """Map scores of the NPE (and the HSM baseline) on ``n_fields`` NFW test fields."""
    cfg = compose_preset("shear_map")
    simulator = build_simulator(cfg)
    batch = simulator.simulate(n_fields, seed=seed)
    encoder, _ = load_encoder(checkpoint)
    npe = npe_maps(encoder, batch)
    shear_true = batch["fields/shear_map"].double().numpy()
    kappa_true = batch["fields/convergence_map"].double().numpy()
    shear, kappa = npe["shear_map"], npe["convergence_map"]
    results = {
        "npe_shear": _scores(shear["mean"], shear_true),
        "npe_kappa": _scores(kappa["mean"], kappa_true),
        "npe_shear_coverage": coverage(shear["mean"], shear["sigma"], shear_true),
        "npe_kappa_coverage": coverage(kappa["mean"], kappa["sigma"], kappa_true),
        "levels": LEVELS.tolist(),
        "n_fields": n_fields,
    }
    if with_hsm:
        hsm = hsm_maps(batch, simulator.survey, int(cfg.simulator.lensing.region_px))
        results["hsm_shear"] = _scores(hsm, shear_true)
    return results


def main(argv: list[str] | None = None) -> int:
    """Evaluate a map checkpoint; write ``shear_maps.json`` and a coverage plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n-fields", type=int, default=200)
    parser.add_argument("--seed", type=int, default=8_000_000)
    parser.add_argument("--no-hsm", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = evaluate(args.checkpoint, args.n_fields, args.seed, not args.no_hsm)
    (args.out / "shear_maps.json").write_text(json.dumps(results, indent=1))
    curves = {
        "shear map": results["npe_shear_coverage"],
        "kappa map": results["npe_kappa_coverage"],
    }
    plot_coverage(curves, args.out / "shear_maps_coverage.png", "map intervals (NPE)")
    for name in ("npe_shear", "hsm_shear", "npe_kappa"):
        for component, r in results.get(name, {}).items():
            print(
                f"{name:10s} {component}: r {r['pearson_pooled']:.3f} (per image "
                f"{r['pearson_per_image_mean']:.3f}) rmse {r['rmse']:.4f} zero-map "
                f"{r['rmse_zero_map']:.4f} empty {r['empty_tiles']:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
