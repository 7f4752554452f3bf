"""Artificial-star test on the real core of M2: completeness, photometric bias and interval coverage.

The crowded-field photometrist's check of a real frame without a deeper catalog (DAOPHOT's
ADDSTAR): stars of known magnitude are added to the frame, rendered with the field's own psField
PSF and Poisson noise, and looked for in the catalogs of the added-to frame. A star is recovered
when a detection lies within 1 px of it with a magnitude within 0.5 mag of its own. Per r bin,
for the crowded model's point estimate and for DAOPHOT-style PSF photometry (photutils) on the
same images: the share recovered, the median r offset of the recovered (measured - added) and,
for BLISS, how often the 90 % interval of its r flux holds the added flux.

The added stars are few per image (``--per-image``, at least ``--min-separation`` px apart, and
from one another's light), so the crowd they land in is the real one. Their colours are those
of a typical M2 turn-off star (u - g 1.0, g - r 0.3, r - i 0.1, i - z 0.0).

    python case_studies/spatial_tiling/artificial_stars.py --checkpoint bliss/models/sdss_crowded.ckpt \\
        --sdss-data ../shared/data/sdss

Writes ``artificial_stars.json`` and ``artificial_stars.png`` to ``--out``.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bliss.catalog.convert import nmgy_per_electron
from bliss.surveys.sdss.psf import SDSS_PIXEL_SCALE_ARCSEC

sys.path.insert(0, str(Path(__file__).parent))
from baselines import daophot_catalog  # noqa: E402
from m2_core import add_region_arguments, load_core, render_stars  # noqa: E402

#: magnitudes of the added star in each band less its r magnitude (u g r i z)
COLOURS = np.array([1.3, 0.3, 0.0, -0.1, -0.1])
MATCH_PX, MATCH_MAG = 1.0, 0.5
INTERVAL = (0.05, 0.95)


def place_stars(
    rng: np.random.Generator, n: int, low: float, high: float, min_separation: float
) -> np.ndarray:
    """``n`` positions (``n 2``) uniform in ``[low, high)^2``, pairwise at least ``min_separation`` apart."""
    found: list[np.ndarray] = []
    for _ in range(1000 * n):
        candidate = rng.uniform(low, high, size=2)
        if all(np.hypot(*(candidate - p)) >= min_separation for p in found):
            found.append(candidate)
            if len(found) == n:
                return np.array(found)
    raise ValueError(
        f"cannot place {n} stars {min_separation} px apart in [{low}, {high}); "
        "lower --per-image or --min-separation."
    )


def recovered(
    added_plocs: np.ndarray, added_mag: np.ndarray, plocs: np.ndarray, mags: np.ndarray
) -> np.ndarray:
    """Index of the detection that recovers each added star, or -1 (``n``).

    The closest detection within :data:`MATCH_PX` whose magnitude is within :data:`MATCH_MAG`.

    Example:
        >>> recovered(np.array([[5.0, 5.0], [9.0, 9.0]]), np.array([18.0, 20.0]),
        ...           np.array([[5.3, 5.0], [9.2, 9.0]]), np.array([18.2, 21.0]))
        array([ 0, -1])
    """
    out = np.full(len(added_plocs), -1)
    for i, (p, m) in enumerate(zip(added_plocs, added_mag, strict=True)):
        dist = np.hypot(*(plocs - p).T) if len(plocs) else np.zeros(0)
        ok = (dist < MATCH_PX) & (np.abs(mags - m) < MATCH_MAG)
        if ok.any():
            out[i] = int(np.flatnonzero(ok)[np.argmin(dist[ok])])
    return out


def add_stars(
    images: torch.Tensor, plocs: np.ndarray, electrons: np.ndarray, psfs: np.ndarray, rng
) -> torch.Tensor:
    """``images`` (``1 c h w``) with stars (``electrons``: ``n c``) added, their light Poisson-drawn.

    ``psfs`` is one PSF image per band (``c k k``); ``rng`` a :class:`numpy.random.Generator`.
    """
    clean = render_stars([plocs], [electrons], psfs, tuple(images.shape[-2:])).double().numpy()
    # Fourier rendering rings slightly below zero at a stamp's edge; that part is kept as it is,
    # so that the added light is the stars' flux on average
    positive = np.clip(clean, 0.0, None)
    light = rng.poisson(positive) + (clean - positive)
    return images + torch.from_numpy(light).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the crowded model")
    add_region_arguments(parser)
    parser.add_argument(
        "--mag-bins", type=float, nargs="+", default=[15, 16, 17, 18, 19, 20, 21, 22]
    )
    parser.add_argument("--images", type=int, default=2, help="added-to images per bin")
    parser.add_argument("--per-image", type=int, default=25)
    parser.add_argument("--min-separation", type=float, default=20.0, help="px")
    parser.add_argument("--no-daophot", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="case_studies/spatial_tiling/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)

    core = load_core(args.checkpoint, args.sdss_data, args.rows, args.cols, args.margin)
    encoder, bands, band, field = core.encoder, core.bands, core.band, core.field
    rows, cols, inputs, m = core.rows, core.cols, core.inputs, args.margin
    centre = ((rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2)
    psfs = np.stack([field.psf_image(b, *centre) for b in bands])
    fwhm_px = float(inputs["psf_fwhm_arcsec"][0, band]) / SDSS_PIXEL_SCALE_ARCSEC
    frame_e_per_nmgy = np.array([1 / nmgy_per_electron(float(z)) for z in field.magzero])
    to_e = core.model_e_per_nmgy  # the network's fluxes to electrons
    height = inputs["images"].shape[-2]
    sky = inputs["background"][0, band].numpy().astype(np.float64)

    def mag(electrons: np.ndarray) -> np.ndarray:
        return 22.5 - 2.5 * np.log10(np.clip(electrons / frame_e_per_nmgy[band], 1e-9, None))

    bins = list(zip(args.mag_bins[:-1], args.mag_bins[1:], strict=True))
    rows_out = []
    for lo, hi in tqdm(bins, desc="r bins", unit="bin"):
        tally = {"bliss": [], "photutils": []}
        offsets = {"bliss": [], "photutils": []}
        covered = []
        for _ in range(args.images):
            plocs = place_stars(rng, args.per_image, m + 8, height - m - 8, args.min_separation)
            r_mag = rng.uniform(lo, hi, size=args.per_image)
            nmgy = 10 ** (-0.4 * (r_mag[:, None] + COLOURS[None] - 22.5))
            electrons = nmgy * frame_e_per_nmgy[None]
            images = add_stars(inputs["images"], plocs, electrons, psfs, rng)
            with torch.no_grad():
                features = encoder.tile_features({**inputs, "images": images})
                estimate, params = encoder.infer_from_features(features)
                estimate = encoder.posterior.with_interval_ends(estimate, params, INTERVAL)
            full = estimate.to_full_catalog()
            n = int(full["n_sources"][0])
            found_plocs = full["plocs"][0, :n].double().numpy()
            found_mag = mag(full["fluxes"][0, :n, band].double().numpy() * to_e)
            low_e = full[f"fluxes@{INTERVAL[0]}"][0, :n, band].double().numpy() * to_e
            high_e = full[f"fluxes@{INTERVAL[1]}"][0, :n, band].double().numpy() * to_e
            index = recovered(plocs, r_mag, found_plocs, found_mag)
            hit = index >= 0
            tally["bliss"] += list(hit)
            offsets["bliss"] += list(found_mag[index[hit]] - r_mag[hit])
            added_e = electrons[:, band]
            covered += list(
                (low_e[index[hit]] <= added_e[hit]) & (added_e[hit] <= high_e[index[hit]])
            )
            if not args.no_daophot:
                image = images[0, band].numpy().astype(np.float64)
                phot_plocs, phot_e = daophot_catalog(image, sky, psfs[band], fwhm_px)
                index = recovered(plocs, r_mag, phot_plocs, mag(phot_e))
                hit = index >= 0
                tally["photutils"] += list(hit)
                offsets["photutils"] += list(mag(phot_e)[index[hit]] - r_mag[hit])
        row = {"r_lo": lo, "r_hi": hi, "n_added": len(tally["bliss"])}
        for name in ("bliss", "photutils"):
            if tally[name]:
                row[f"{name}_recovered"] = float(np.mean(tally[name]))
                row[f"{name}_median_offset"] = (
                    float(np.median(offsets[name])) if offsets[name] else None
                )
        row["bliss_coverage90"] = float(np.mean(covered)) if covered else None
        rows_out.append(row)
        print(json.dumps(row))

    result = {
        "checkpoint": str(args.checkpoint),
        "region_rows": args.rows,
        "region_cols": args.cols,
        "settings": {k: v for k, v in vars(args).items() if k not in ("checkpoint",)},
        "match": {"px": MATCH_PX, "mag": MATCH_MAG},
        "bins": rows_out,
    }
    tmp = out / "artificial_stars.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "artificial_stars.json")
    _plot(rows_out, out / "artificial_stars.png")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = [(r["r_lo"] + r["r_hi"]) / 2 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, colour in (("bliss", "tab:red"), ("photutils", "tab:cyan")):
        key = f"{name}_recovered"
        if key not in rows[0]:
            continue
        label = "BLISS crowded" if name == "bliss" else "photutils IterativePSFPhotometry"
        axes[0].plot(centres, [r[key] for r in rows], "o-", c=colour, label=label)
        offsets = [r[f"{name}_median_offset"] for r in rows]
        axes[1].plot(
            centres, [np.nan if o is None else o for o in offsets], "o-", c=colour, label=label
        )
    axes[0].set_ylabel(f"recovered (within {MATCH_PX:g} px and {MATCH_MAG:g} mag)")
    axes[1].set_ylabel("median r offset, measured - added (mag)")
    axes[1].axhline(0, c="k", lw=0.5)
    for ax in axes:
        ax.set_xlabel("added star's r (mag)")
        ax.legend(fontsize=8)
    axes[0].set_ylim(0, 1.02)
    fig.suptitle("Artificial stars in the M2 core (SDSS 2583-2-136, rows 580-780, cols 260-460)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
