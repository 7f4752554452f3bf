"""Constant shear: the NPE posterior against AnaCal's FPFS on shape-noise-cancelled test images.

Each intrinsic scene (a catalog drawn from the preset's prior, with its seeing and sky) is rendered
four times: as drawn and rotated by 90 degrees (which turns every galaxy's ellipticity by 180
degrees, so intrinsic shapes cancel in the pair), each sheared by +g and by -g (which cancels
what does not depend on the shear). The four images share a group id, and the regression's
standard errors are a jackknife over groups. Estimators on the same images:

* ``npe``: the posterior mean of the image-level shear factor;
* ``npe_deconvolved`` (models trained on a normal shear prior): the posterior divided by the
  training prior (normal with ``g_sigma`` per component): ``mean * tau^2 / (tau^2 - sigma^2)``,
  the likelihood's peak, which the prior does not pull towards zero (images whose posterior is not
  narrower than the prior get none). A model trained on the flat prior (``distribution: disk``,
  ``shear_constant_flat``) has no prior to divide out: its posterior mean is already the
  likelihood's mean for shears well inside the disk;
* ``npe_symmetrized`` (``--symmetrize``): the posterior averaged over the eight turns of the
  image (quarter turns and mirrors), each turned back, as ``mode=predict`` reports it
  (``predict.region_turns=8``);
* ``fpfs``: AnaCal's FPFS ellipticities and responses summed over the image (``e / r``).

Usage (from the repository root)::

    python case_studies/weak_lensing/evaluate_shear.py --checkpoint CKPT --n-scenes 200 \
        --out case_studies/weak_lensing/results
"""

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from scipy.stats import norm
from tqdm import tqdm

from bliss.catalog import TileCatalog
from bliss.catalog.batch import CATALOG_PREFIX, catalog_key
from bliss.cli.generate import build_simulator
from bliss.data.transforms import rotate90
from bliss.encoder.checkpoint import load_encoder
from bliss.metrics.shear import grouped_shear_bias, per_image_rmse
from bliss.predict.region_turns import turned_region_params
from bliss.simulator.lensing import ConstantLensing, LensingPrior

sys.path.insert(0, str(Path(__file__).parent))
from fpfs_baseline import fpfs_shear  # noqa: E402

CONF = Path(__file__).parent / "conf"
#: central-interval levels of the coverage check
LEVELS = np.round(np.arange(0.05, 0.951, 0.05), 2)
#: test sets: overrides of the training preset
TEST_SETS = {
    "in_prior": [],
    # three times the galaxy density: close pairs (blends) in most images, off the training prior
    "blended": ["prior.density_per_arcmin2=240"],
}


def compose_preset(preset: str, overrides: list[str] | None = None):  # noqa: ANN201
    """The case study's preset (``shear_constant`` or ``shear_map``) with overrides."""
    overrides = [
        f"hydra.searchpath=[file://{CONF.resolve()}]",
        "mode=generate",
        f"experiment={preset}",
        *(overrides or []),
    ]
    with initialize_config_module("bliss.conf", version_base="1.3"):
        return compose("config", overrides=overrides)


def compose_config(test_set: str, extra: list[str] | None = None):  # noqa: ANN201
    """The constant-shear preset with the test set's overrides."""
    return compose_preset("shear_constant", [*TEST_SETS[test_set], *(extra or [])])


def _rotated(padded: TileCatalog) -> TileCatalog:
    """Every image's catalog rotated by 90 degrees about the grid's centre (galaxies turn too)."""
    rotated = []
    for index in range(padded.batch_size):
        item = {catalog_key(k): v[index] for k, v in padded.items()}
        rotated.append(rotate90(item))
    keys = [k for k in rotated[0] if k.startswith(CATALOG_PREFIX)]
    data = {k[len(CATALOG_PREFIX) :]: torch.stack([r[k] for r in rotated]) for k in keys}
    return TileCatalog(padded.tile_slen, data)


def cancelled_scenes(simulator, n_scenes: int, g_sigma: float, g_max: float, seed: int) -> dict:  # noqa: ANN001
    """``4 n_scenes`` images: each scene as drawn and rotated, sheared by +g and -g.

    The shear of a scene is drawn like the training prior's (normal per component, ``|g| <=
    g_max``). Returns the batch (``images``, ``background``, ``psf_fwhm_arcsec``,
    ``fields/shear``) and ``groups`` (``4 n``: the scene of each image).
    """
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_padded = simulator.n_tiles + 2 * simulator.margin_tiles
    padded = simulator.prior.sample(n_scenes, n_padded, n_padded, generator)
    conditions = simulator.conditions.sample(n_scenes, generator)
    dither = torch.zeros(n_scenes, len(simulator.survey.bands), 2)
    shears = []
    while len(shears) < n_scenes:
        g = rng.normal(0.0, g_sigma, 2)
        if math.hypot(*g) <= g_max:
            shears.append(g)
    scenes = {"drawn": padded, "rotated": _rotated(padded)}
    batches = []
    for variant, (scene, sign) in enumerate(
        (s, sign) for sign in (1.0, -1.0) for s in scenes.values()
    ):
        fields = [ConstantLensing(sign * g[0], sign * g[1]) for g in shears]
        batches.append(simulator.observe(scene, conditions, dither, seed * 8 + variant, fields))
    keys = ("images", "background", "psf_fwhm_arcsec", "fields/shear")
    out = {key: torch.cat([b[key] for b in batches]) for key in keys}
    out["groups"] = torch.arange(n_scenes).repeat(4)
    return out


@torch.no_grad()
def npe_estimates(
    encoder,  # noqa: ANN001
    batch: dict,
    batch_size: int = 32,
    symmetrize: bool = False,
) -> dict:
    """Posterior mean and standard deviation of the shear (``n 2``) of every image.

    ``symmetrize``: also ``turned``, the same for the posterior averaged over the image's eight
    quarter turns and mirrors (:func:`bliss.predict.region_turns.turned_region_params`, what
    ``mode=predict`` reports with ``predict.region_turns=8``).
    """
    region = encoder.regions["shear"]
    keys = ("images", "background", "psf_fwhm_arcsec", "psf_shape")
    inputs = {k: batch[k] for k in keys if k in batch}

    def shear_params(data: dict) -> dict[str, torch.Tensor]:
        return {"shear": encoder.region_params(encoder.tile_features(data))["shear"]}

    locs, scales = defaultdict(list), defaultdict(list)  # per estimate: "plain", "turned"
    for start in range(0, len(batch["images"]), batch_size):
        part = {k: v[start : start + batch_size] for k, v in inputs.items()}
        params = {"plain": shear_params(part)}
        if symmetrize:
            params["turned"] = turned_region_params(
                {"shear": region}, shear_params, part, unturned=params["plain"]
            )
        for name, estimate in params.items():
            loc, scale = region.factor._loc_scale(estimate["shear"][:, 0, 0])
            locs[name].append(loc)
            scales[name].append(scale)
    out = {
        name: {"mean": torch.cat(locs[name]).numpy(), "sigma": torch.cat(scales[name]).numpy()}
        for name in locs
    }
    return out.pop("plain") | out


def deconvolved(mean: np.ndarray, sigma: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """The likelihood's mean and width, dividing the normal prior of width ``tau`` out.

    NaN where the posterior is not narrower than the prior (no information to divide out).
    """
    ok = sigma < tau
    with np.errstate(divide="ignore", invalid="ignore"):  # the NaN entries are the answer
        ratio = tau**2 / (tau**2 - sigma**2)
        return np.where(ok, mean * ratio, np.nan), np.where(ok, sigma * np.sqrt(ratio), np.nan)


def training_shear_prior(config: dict, checkpoint: str) -> dict:
    """The constant-shear prior a checkpoint was trained on (its recorded ``simulator.lensing``).

    Raises:
        ValueError: the checkpoint records no constant-shear lensing prior.
    """
    lensing = (config.get("simulator") or {}).get("lensing") or {}
    if lensing.get("kind", "constant") != "constant" or not lensing:
        raise ValueError(
            f"{checkpoint}: records no constant-shear prior (simulator.lensing={lensing!r}); "
            "expected a model of the shear_constant presets"
        )
    # the prior itself fills in the keys a config left out with its defaults
    prior = LensingPrior(**{k: v for k, v in lensing.items() if k != "_target_"})
    return {"distribution": prior.distribution, "g_sigma": prior.g_sigma, "g_max": prior.g_max}


def coverage(mean: np.ndarray, sigma: np.ndarray, truth: np.ndarray) -> list[float]:
    """Share of true components inside the central normal interval at each of :data:`LEVELS`."""
    z = np.abs(truth - mean) / sigma
    finite = np.isfinite(z)
    if not finite.any():
        return [float("nan")] * len(LEVELS)
    return [float((z[finite] <= norm.ppf(0.5 + level / 2)).mean()) for level in LEVELS]


def fpfs_estimates(batch: dict, survey, seed: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """AnaCal FPFS sums of every image, with a Moffat PSF of the image's FWHM.

    Returns the ellipticity sums ``e`` and response sums ``r`` (``n 2`` each).
    """
    import galsim

    rng = np.random.default_rng(seed)
    scale = survey.pixel_scale_arcsec
    e, r = np.zeros((len(batch["images"]), 2)), np.zeros((len(batch["images"]), 2))
    for index in tqdm(range(len(batch["images"])), desc="fpfs", unit="image"):
        sky = float(batch["background"][index, 0])
        fwhm = float(batch["psf_fwhm_arcsec"][index, 0])
        psf = galsim.Moffat(beta=survey.psf_beta, fwhm=fwhm).drawImage(nx=33, ny=33, scale=scale)
        image = batch["images"][index, 0].double().numpy() - sky
        sums = fpfs_shear(image, psf.array / psf.array.sum(), sky, scale, rng=rng)
        e[index], r[index] = (sums["e1"], sums["e2"]), (sums["r1"], sums["r2"])
    return e, r


def ensemble_bias(e: np.ndarray, r: np.ndarray, truth: np.ndarray, groups: np.ndarray) -> dict:
    """m and c of a ratio-of-sums estimator (FPFS's own), with jackknife errors over scenes.

    Per scene and component the images sheared by +g and -g give ``E+ - E- = 2 (1 + m) g R``
    and ``E+ + E- = 2 c R`` (``E``, ``R``: sums over the scene's two rotations). Both are
    estimated as ratios of sums over scenes, ``1 + m = sum g (E+ - E-) / sum 2 g^2 R`` and
    ``c = sum (E+ + E-) / sum 2 R`` (for one shear shared by every scene, FPFS's usual
    ``sum E / sum R``). The response of one small scene is noisy (AnaCal's selection responses
    of a few galaxies vary by several times their mean from image to image); a least-squares
    slope of ``E+ - E-`` on ``2 g R`` would divide by the sum of the squared noisy responses
    and bias ``m`` low (errors in the regressor), which the ratio of sums does not.
    """
    n_scenes = int(groups.max()) + 1
    # cancelled_scenes' order: (drawn, +g), (rotated, +g), (drawn, -g), (rotated, -g), n each
    e_parts = e.reshape(4, n_scenes, 2)
    if not np.array_equal(groups, np.tile(np.arange(n_scenes), 4)):
        raise ValueError("ensemble_bias expects the image order of cancelled_scenes")
    e_plus, e_minus = e_parts[0] + e_parts[1], e_parts[2] + e_parts[3]
    resp = 0.5 * r.reshape(4, n_scenes, 2).sum(0)
    g = truth[:n_scenes]
    out = {}

    def fit(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        expected, y = 2 * g[mask] * resp[mask], e_plus[mask] - e_minus[mask]
        m = (g[mask] * y).sum(0) / (g[mask] * expected).sum(0) - 1
        c = (e_plus[mask] + e_minus[mask]).sum(0) / (2 * resp[mask]).sum(0)
        return m, c

    m, c = fit(np.ones(n_scenes, dtype=bool))
    jack = np.array([np.concatenate(fit(np.arange(n_scenes) != k)) for k in range(n_scenes)])
    err = np.sqrt((n_scenes - 1) / n_scenes * ((jack - jack.mean(0)) ** 2).sum(0))
    for i in range(2):
        out[f"m{i + 1}"], out[f"c{i + 1}"] = float(m[i]), float(c[i])
        out[f"m{i + 1}_err"], out[f"c{i + 1}_err"] = float(err[i]), float(err[2 + i])
    out["n_scenes"] = int(n_scenes)
    return out


def summarize(estimate: np.ndarray, truth: np.ndarray, groups: np.ndarray) -> dict:
    """m, c (group-jackknife errors) and per-image RMSE over the images with an estimate."""
    ok = np.isfinite(estimate).all(axis=1)
    # a scene counts only with all four images: the cancellation needs the whole group
    whole = np.bincount(groups[ok], minlength=groups.max() + 1) == 4
    ok &= whole[groups]
    if ok.sum() < 12:  # the jackknife needs three whole scenes
        return {"n_images": int(ok.sum())}
    result = grouped_shear_bias(estimate[ok], truth[ok], groups[ok])
    result["rmse"] = per_image_rmse(estimate[ok], truth[ok])
    result["n_images"] = int(ok.sum())
    return result


def evaluate(
    checkpoint: str,
    test_set: str,
    n_scenes: int,
    seed: int,
    with_fpfs: bool,
    shears: tuple[float, float] | None = None,
    symmetrize: bool = False,
) -> dict:
    """Every estimator's m, c, RMSE and (posteriors) coverage on one test set.

    ``shears``: ``(g_sigma, g_max)`` of the test shears [default: the shear_constant preset's].
    ``symmetrize``: also score the posterior averaged over the image's eight turns
    (``npe_symmetrized``, :func:`npe_estimates`).
    """
    cfg = compose_config(test_set)
    simulator = build_simulator(cfg)
    lensing = cfg.simulator.lensing
    g_sigma, g_max = shears or (lensing.g_sigma, lensing.g_max)
    batch = cancelled_scenes(simulator, n_scenes, g_sigma, g_max, seed)
    truth = batch["fields/shear"][:, 0, 0].double().numpy()
    groups = batch["groups"].numpy()
    encoder, config = load_encoder(checkpoint)
    trained_on = training_shear_prior(config, checkpoint)
    npe = npe_estimates(encoder, batch, symmetrize=symmetrize)
    results = {
        "npe": summarize(npe["mean"], truth, groups)
        | {"coverage": coverage(npe["mean"], npe["sigma"], truth)},
        "npe_sigma_median": float(np.median(npe["sigma"])),
        "training_prior": trained_on,
    }
    if symmetrize:
        turned = npe["turned"]
        results["npe_symmetrized"] = summarize(turned["mean"], truth, groups) | {
            "coverage": coverage(turned["mean"], turned["sigma"], truth)
        }
    if trained_on["distribution"] == "normal":
        mean_l, sigma_l = deconvolved(npe["mean"], npe["sigma"], trained_on["g_sigma"])
        results["npe_deconvolved"] = summarize(mean_l, truth, groups) | {
            "coverage": coverage(mean_l, sigma_l, truth)
        }
    if with_fpfs:
        e, r = fpfs_estimates(batch, simulator.survey, seed)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_image = np.where(r > 0, e / r, np.nan)
        results["fpfs"] = summarize(per_image, truth, groups)
        results["fpfs_ensemble"] = ensemble_bias(e, r, truth, groups)
    results["levels"] = LEVELS.tolist()
    results["n_scenes"] = n_scenes
    return results


def plot_coverage(curves: dict[str, list[float]], path: Path, title: str) -> None:
    """Observed against nominal coverage of central intervals at :data:`LEVELS`, one line per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1)
    for label, observed in curves.items():
        ax.plot(LEVELS, observed, marker=".", label=label)
    ax.set(xlabel="nominal coverage", ylabel="observed coverage", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Evaluate a checkpoint on every test set; write ``shear_constant.json`` and a plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n-scenes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7_000_000)
    parser.add_argument("--test-sets", nargs="+", default=list(TEST_SETS), choices=list(TEST_SETS))
    parser.add_argument("--no-fpfs", action="store_true", help="skip the AnaCal baseline")
    parser.add_argument(
        "--shears",
        nargs=2,
        type=float,
        metavar=("G_SIGMA", "G_MAX"),
        help="test shears: normal per component, |g| <= G_MAX [default: the shear_constant "
        "preset's, whatever prior the checkpoint was trained on]",
    )
    parser.add_argument(
        "--symmetrize",
        action="store_true",
        help="also score the posterior averaged over the eight turns of each image (8x the NPE cost)",
    )
    parser.add_argument("--name", default="shear_constant", help="stem of the output files")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        test_set: evaluate(
            args.checkpoint,
            test_set,
            args.n_scenes,
            args.seed,
            not args.no_fpfs,
            args.shears,
            args.symmetrize,
        )
        for test_set in args.test_sets
    }
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=1))
    curves = {
        f"{test_set}: {name}": result[name]["coverage"]
        for test_set, result in results.items()
        for name in ("npe", "npe_symmetrized", "npe_deconvolved")
        if name in result
    }
    plot_coverage(curves, args.out / f"{args.name}_coverage.png", "constant-shear intervals")
    for test_set, result in results.items():
        for name in ("npe", "npe_symmetrized", "npe_deconvolved", "fpfs", "fpfs_ensemble"):
            if name in result and "m1" in result[name]:
                r = result[name]
                print(
                    f"{test_set:9s} {name:16s} m1 {r['m1']:+.3f}±{r['m1_err']:.3f} "
                    f"m2 {r['m2']:+.3f}±{r['m2_err']:.3f} c1 {r['c1']:+.1e} c2 {r['c2']:+.1e} "
                    f"rmse {r.get('rmse', float('nan')):.4f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
