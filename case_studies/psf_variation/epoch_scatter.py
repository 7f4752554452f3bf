"""Do the same objects, measured in 17 Stripe 82 epochs, scatter as their posteriors say?

Each epoch of the cut-out (its own PSF, sky and noise, :mod:`stripe82`) is cataloged by a model
(default: the shipped ``sdss_generalist``). The objects are those SDSS PHOTO detected in at least
half of the epochs (its single-epoch catalogs, ``cat-*.fits``); in each epoch the model's
detection within ``--match-px`` of an object is its measurement there.

For an object measured in epochs ``e = 1..n`` with values ``f_e`` and posterior sigmas ``s_e``
(half the 16-84 % interval), the standardised leave-one-out residual is

    z_e = (f_e - m_-e) / sqrt(s_e^2 + v_-e)

with ``m_-e`` the inverse-variance mean of the other epochs and ``v_-e`` its variance. If the
posteriors are calibrated the ``z`` have unit spread; the issue's target is 0.7-1.4. It is
computed for every band's flux and for both coordinates (the epochs share one pixel grid).

Two runs of the same model: told each epoch's PSF FWHM (``psf_aware``), and told the survey
preset's nominal FWHM for every epoch (``nominal_psf``), which shows what knowing the PSF buys on
real data.

    python case_studies/psf_variation/epoch_scatter.py --data ../shared/data/sdss_s82_multiepoch \
        --out case_studies/psf_variation/results

Writes ``epoch_scatter.{json,md,png}`` in ``--out``.
"""

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bliss.encoder.checkpoint import load_encoder
from bliss.errors import BlissValueError
from bliss.metrics import match_catalogs
from bliss.predict.model import model_conditions
from bliss.predict.predictor import PredictorSettings, build_predictor

sys.path.insert(0, str(Path(__file__).parent))
from stripe82 import BANDS, Epoch, read_epochs  # noqa: E402

ROOT = Path(__file__).parents[2]
DEFAULT_CHECKPOINT = ROOT / "bliss" / "models" / "sdss_generalist.ckpt"
SURVEY_PRESET = ROOT / "bliss" / "conf" / "survey" / "sdss.yaml"
QUANTILES = (0.16, 0.84)
REFERENCE = BANDS.index("r")
#: PHOTO detections of one object in different epochs lie within this of each other
GROUP_ARCSEC = 1.0


def photo_objects(directory: Path, epochs: list[Epoch], margin_px: float = 3.0) -> Table:
    """Objects PHOTO detected in at least half of the epochs, inside the cut-out by ``margin_px``.

    Columns: mean ``ra``, ``dec``; ``x``, ``y`` on the cut-out's grid (0-indexed pixel centres);
    ``n_epochs``; each band's median ``cmodelflux`` over the epochs (``photo_<band>``) and the
    scatter of its single-epoch values relative to it (``photo_<band>_rel_rms``). PHOTO's
    catalogs cover whole frames, so they also hold objects outside the cut-out.
    """
    (path,) = [p for p in directory.glob("cat-*.fits") if not p.name.startswith("cat-s82")]
    rows = Table.read(path)
    groups: list[list[int]] = []
    centres: list[np.ndarray] = []
    cos_dec = math.cos(math.radians(float(np.mean(rows["dec"]))))
    for i, row in enumerate(rows):
        here = np.array([row["ra"] * cos_dec, row["dec"]]) * 3600.0
        distances = [np.hypot(*(here - c)) for c in centres]
        if distances and min(distances) < GROUP_ARCSEC:
            groups[int(np.argmin(distances))].append(i)
        else:
            groups.append([i])
            centres.append(here)
    wcs = epochs[0].image.wcs
    height, width = epochs[0].image.images.shape[1:]
    kept = []
    for g in groups:
        if len(g) < len(epochs) / 2:
            continue
        ra, dec = float(np.mean(rows["ra"][g])), float(np.mean(rows["dec"][g]))
        x, y = (float(v) for v in wcs.world_to_pixel_values(ra, dec))
        inside = margin_px - 0.5 <= min(x, y) and x <= width - 0.5 - margin_px
        if not (inside and y <= height - 0.5 - margin_px):
            continue
        row = {"ra": ra, "dec": dec, "x": x, "y": y, "n_epochs": len(g)}
        for band in BANDS:
            flux = np.asarray(rows[f"cmodelflux_{band}"][g], dtype=float)
            row[f"photo_{band}"] = float(np.median(flux))
            row[f"photo_{band}_rel_rms"] = float(np.std(flux, ddof=1) / abs(np.median(flux)))
        kept.append(row)
    if not kept:
        raise BlissValueError(
            f"{directory}: no object that PHOTO detected in at least half of the {len(epochs)} "
            "epochs lies inside the cut-out; nothing to compare across epochs."
        )
    return Table(rows=kept)


def measure(
    predictor, epochs: list[Epoch], objects: Table, match_px: float, nominal_fwhm: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Each object's value and sigma in each epoch (NaN where not detected or not observed).

    Returns ``name -> (objects, epochs, 2)`` arrays of ``(value, sigma)`` for ``flux_<band>``
    (nanomaggies), ``x`` and ``y`` (pixels), and ``detected`` ``(objects, epochs)``: matched,
    and the r band has data at the object's centre. A band without data there gets NaN.
    """
    # bliss positions are (row, col) with pixel centres at +0.5
    truth = torch.tensor(np.stack([objects["y"], objects["x"]], axis=1) + 0.5, dtype=torch.float32)
    names = [f"flux_{b}" for b in BANDS] + ["x", "y"]
    out = {name: np.full((len(objects), len(epochs), 2), np.nan) for name in names}
    detected = np.zeros((len(objects), len(epochs)), bool)
    for e, epoch in enumerate(epochs):
        image = epoch.image
        if nominal_fwhm is not None:
            image = dataclasses.replace(image, psf_fwhm_arcsec=nominal_fwhm)
        catalog = predictor.predict(image, quantiles=QUANTILES)
        n = int(catalog["n_sources"][0])
        plocs = catalog["plocs"][0, :n]
        observed = _observed(epoch, truth)
        truth_idx, est_idx = match_catalogs(truth, plocs, max_dist_px=match_px)
        for t, s in zip(truth_idx.tolist(), est_idx.tolist(), strict=True):
            if not observed[REFERENCE, t]:
                continue
            detected[t, e] = True
            lo, hi = (catalog[f"fluxes@{q:g}"][0, s].numpy() for q in QUANTILES)
            flux = catalog["fluxes"][0, s].numpy()
            for c, band in enumerate(BANDS):
                if observed[c, t]:
                    out[f"flux_{band}"][t, e] = flux[c], (hi[c] - lo[c]) / 2
            plo, phi = (catalog[f"plocs@{q:g}"][0, s].numpy() for q in QUANTILES)
            centre = plocs[s].numpy()
            out["y"][t, e] = centre[0], (phi[0] - plo[0]) / 2
            out["x"][t, e] = centre[1], (phi[1] - plo[1]) / 2
    out["detected"] = detected
    return out


def _observed(epoch: Epoch, truth: torch.Tensor) -> np.ndarray:
    """Whether each band has data at each object's centre pixel. Shape ``c n``.

    An epoch cut from a frame's edge has no data over part of the cut-out; a band's flux there
    would be the prior's, not a measurement.
    """
    images = epoch.image.images
    rows = np.clip(truth[:, 0].long().numpy(), 0, images.shape[1] - 1)
    cols = np.clip(truth[:, 1].long().numpy(), 0, images.shape[2] - 1)
    return np.isfinite(images[:, rows, cols])


def loo_residuals(values: np.ndarray) -> np.ndarray:
    """Standardised leave-one-out residuals of one object's epochs (see the module docstring).

    Args:
        values: ``(value, sigma)`` per epoch, NaN where not measured. Shape ``e 2``.

    Returns:
        ``z`` per measured epoch (empty when fewer than 3 epochs are measured). Shape ``k``.
    """
    ok = np.isfinite(values).all(axis=1) & (values[:, 1] > 0)
    f, s = values[ok, 0], values[ok, 1]
    if len(f) < 3:
        return np.zeros(0)
    w = 1.0 / s**2
    others = w.sum() - w
    mean = ((w * f).sum() - w * f) / others
    return (f - mean) / np.sqrt(s**2 + 1.0 / others)


def spread(z: np.ndarray) -> dict[str, float]:
    """Standard deviation of pooled residuals, its standard error, and 1.4826 MAD.

    The standard error ``sd / sqrt(2 (n - 1))`` is that of a normal sample's sd.
    """
    n = len(z)
    if n < 2:
        return {"n": n, "sd": float("nan"), "sd_se": float("nan"), "robust_sd": float("nan")}
    sd = float(np.std(z, ddof=1))
    mad = np.median(np.abs(z - np.median(z)))
    return {
        "n": n,
        "sd": sd,
        "sd_se": sd / math.sqrt(2 * (n - 1)),
        "robust_sd": float(1.4826 * mad),
    }


def summarise(measured: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per quantity, the spread of the residuals pooled over objects."""
    return {
        name: spread(np.concatenate([loo_residuals(v) for v in values]))
        for name, values in measured.items()
        if name != "detected"
    }


def per_object(measured: dict[str, np.ndarray], objects: Table, band: str) -> list[dict]:
    """Per object: epochs detected, and the scatter of its ``band`` flux against its posterior.

    ``rel_rms``: standard deviation over epochs relative to the mean; ``rel_sigma``: the median
    posterior sigma relative to the flux; PHOTO's ``cmodelflux`` scatter for comparison.
    """
    rows = []
    for o, values in enumerate(measured[f"flux_{band}"]):
        f, s = values[:, 0], values[:, 1]
        rows.append(
            {
                "object": o,
                "photo_mag": 22.5 - 2.5 * math.log10(objects[f"photo_{band}"][o]),
                "photo_epochs": int(objects["n_epochs"][o]),
                "bliss_epochs": int(measured["detected"][o].sum()),
                "bliss_rel_rms": float(np.nanstd(f, ddof=1) / abs(np.nanmean(f))),
                "bliss_rel_sigma": float(np.nanmedian(s / f)),
                "photo_rel_rms": float(objects[f"photo_{band}_rel_rms"][o]),
            }
        )
    return rows


def report_table(report: dict) -> str:
    """Markdown: the spread of z per quantity for each run, then the per-object r fluxes."""
    runs = list(report["runs"])
    header = "| quantity | " + " | ".join(f"{r}: sd ± se (robust), n" for r in runs) + " |"
    lines = [header, "| --- |" + " --- |" * len(runs)]
    for name in report["runs"][runs[0]]["spread"]:
        cells = []
        for run in runs:
            s = report["runs"][run]["spread"][name]
            cells.append(f"{s['sd']:.2f} ± {s['sd_se']:.2f} ({s['robust_sd']:.2f}), {s['n']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"r-band flux per object ({runs[0]}):",
        "",
        "| object | PHOTO r (cmodel) | epochs: PHOTO / BLISS | BLISS rms / flux | BLISS sigma / flux"
        " | PHOTO rms / flux |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["runs"][runs[0]]["per_object_r"]:
        lines.append(
            f"| {row['object']} | {row['photo_mag']:.2f} | {row['photo_epochs']} / "
            f"{row['bliss_epochs']} | {row['bliss_rel_rms']:.3f} | {row['bliss_rel_sigma']:.3f} | "
            f"{row['photo_rel_rms']:.3f} |"
        )
    return "\n".join(lines)


def plot(report: dict, measured: dict, epochs: list[Epoch], objects: Table, path: Path) -> None:
    """Per object, the r flux in each epoch against its seeing; and the residuals' histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(objects)
    figure, axes = plt.subplots(1, n + 1, figsize=(3.2 * (n + 1), 3.2))
    fwhm = np.array([e.image.psf_fwhm_arcsec[BANDS.index("r")] for e in epochs])
    for o in range(n):
        ax = axes[o]
        for run, style in (("psf_aware", "o"), ("nominal_psf", "s")):
            v = measured[run]["flux_r"][o]
            ax.errorbar(fwhm, v[:, 0], v[:, 1], fmt=style, ms=3, label=run, alpha=0.8)
        ax.axhline(objects["photo_r"][o], color="k", lw=0.8, label="PHOTO median")
        ax.set_xlabel("epoch r PSF FWHM (arcsec)")
        ax.set_title(f"object {o}: r = {22.5 - 2.5 * math.log10(objects['photo_r'][o]):.1f}")
    axes[0].set_ylabel("r flux (nmgy)")
    axes[0].legend(fontsize=6)
    grid = np.linspace(-4, 4, 200)
    for run in measured:
        z = np.concatenate(
            [
                loo_residuals(measured[run][f"flux_{b}"][o])
                for b in BANDS
                for o in range(len(objects))
            ]
        )
        axes[-1].hist(z, bins=np.linspace(-4, 4, 25), density=True, histtype="step", label=run)
    axes[-1].plot(grid, np.exp(-(grid**2) / 2) / math.sqrt(2 * math.pi), "k--", label="N(0, 1)")
    axes[-1].set_xlabel("z, fluxes of all bands")
    axes[-1].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/sdss_s82_multiepoch"))
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--match-px", type=float, default=2.0)
    parser.add_argument("--out", default="outputs/epoch_scatter")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    directory = Path(args.data)
    epochs = read_epochs(directory)
    objects = photo_objects(directory, epochs)
    encoder, model_config = load_encoder(args.checkpoint)
    model = model_conditions(tuple(encoder.bands), model_config)
    survey = instantiate(OmegaConf.load(SURVEY_PRESET))
    predictor = build_predictor(PredictorSettings(), encoder, model, False, survey)
    nominal = np.array([survey.psf_fwhm_arcsec(b) for b in BANDS], dtype=np.float32)
    measured = {
        "psf_aware": measure(predictor, epochs, objects, args.match_px, None),
        "nominal_psf": measure(predictor, epochs, objects, args.match_px, nominal),
    }
    report = {
        "config": {
            **vars(args),
            "checkpoint_sha256": hashlib.sha256(Path(args.checkpoint).read_bytes()).hexdigest(),
        },
        "epochs": [
            {
                "run": e.run,
                "camcol": e.camcol,
                "field": e.field,
                "psf_fwhm_arcsec": dict(
                    zip(BANDS, e.image.psf_fwhm_arcsec.round(3).tolist(), strict=True)
                ),
            }
            for e in epochs
        ],
        "objects": [dict(zip(objects.colnames, map(float, row), strict=True)) for row in objects],
        "runs": {
            run: {
                "spread": summarise(m),
                "per_object_r": per_object(m, objects, "r"),
                "detected_per_object": m["detected"].sum(axis=1).tolist(),
            }
            for run, m in measured.items()
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "epoch_scatter.json").write_text(json.dumps(report, indent=1))
    (out / "epoch_scatter.md").write_text(report_table(report) + "\n")
    plot(report, measured, epochs, objects, out / "epoch_scatter.png")
    print(report_table(report))
    print(f"-> {out}/epoch_scatter.{{json,md,png}}")
    return report


if __name__ == "__main__":
    main()
