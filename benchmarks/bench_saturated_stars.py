"""Saturated stars measured on their wings: real unsaturated stars with their cores cut out.

Usage: python benchmarks/bench_saturated_stars.py --data-dir ../shared/data/sdss \
       [--fields 94-1-12 2583-2-136] [--radii 1.5 2.5 3.5 5] [--out saturated_stars.json]

On each SDSS frame (read as ``survey=sdss_frames`` reads it for the shipped ``sdss_real`` model,
its PSF with the model's halo), ``sep`` finds the stars of r 13.5-17 that are isolated (no other
detection within 12 px), unsaturated, unmasked and away from the border. They are split in two
halves. Each half's cores are cut out (a disk of radius R, NaN and marked saturated in r and i)
while the other half and every other detection stay in the catalog, and
:func:`bliss.predict.saturated_stars.recover_saturated_stars` measures the cut stars on their
wings; its wing correction is then measured on other stars than those it corrects. Each cut
star's r flux is compared with a fit of the same star whole. Prints, per R, the share of the PSF's
light lost, the median and scatter of ln(wing / whole) and the coverage of the 90 % intervals,
for all stars and for those brighter than r = 15.5. Target: |median| <= 0.02 and coverage
0.85-0.95 for R <= 3.5 px (the cores of SDSS stars of r 12-14).
"""

import argparse
import dataclasses
import json
import os
import warnings

import numpy as np

#: sep's detections taken as candidates: r magnitudes, isolation and border, pixels
MAG_RANGE = (13.5, 17.0)
ISOLATION_PX = 12.0
BORDER_PX = 30
BANDS = "ugriz"
REFERENCE = BANDS.index("r")
CUT_BANDS = (BANDS.index("r"), BANDS.index("i"))


def candidates(image, sep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sep's r detections (``n 2`` plocs, electrons) and the indices of the test stars."""
    from scipy.spatial import cKDTree

    data = np.nan_to_num(image.images[REFERENCE] - image.background[REFERENCE])
    noise = np.sqrt(np.clip(image.background[REFERENCE], 1, None))
    objects = sep.extract(data.astype(np.float64), 5.0, err=noise.astype(np.float64), minarea=5)
    plocs = np.stack([objects["y"], objects["x"]], -1) + 0.5
    electrons = np.asarray(objects["flux"], dtype=np.float64)
    nmgy = 10 ** (-0.4 * (float(image.magzero[REFERENCE]) - 22.5))
    mag = 22.5 - 2.5 * np.log10(np.clip(electrons * nmgy, 1e-9, None))
    tree = cKDTree(plocs)
    height, width = data.shape
    saturated = image.saturated.any(0)
    chosen = []
    for i in np.flatnonzero((mag > MAG_RANGE[0]) & (mag < MAG_RANGE[1])):
        row, col = (int(v) for v in plocs[i])
        if not (BORDER_PX <= row < height - BORDER_PX and BORDER_PX <= col < width - BORDER_PX):
            continue
        if len(tree.query_ball_point(plocs[i], ISOLATION_PX)) > 1:
            continue
        if saturated[row - 25 : row + 25, col - 25 : col + 25].any():
            continue
        if not np.isfinite(image.images[:, row - 3 : row + 4, col - 3 : col + 4]).all():
            continue
        chosen.append(i)
    return plocs, electrons, np.array(chosen, dtype=int)


def measure(image, radii) -> list[dict]:
    """Every test star of one frame: its whole fit and its wing fit at each cut radius."""
    import sep
    import torch

    from bliss.catalog import FullCatalog
    from bliss.predict.psf_photometry import flux_per_electron, nominal_psf_models
    from bliss.predict.saturated_stars import recover_saturated_stars
    from bliss.predict.wing_fit import fit_whole_star

    plocs, electrons, test = candidates(image, sep)
    bands, height, width = image.images.shape
    models = nominal_psf_models(image, 0.396, 3.5, cell_px=16.0)
    per_electron = np.array([flux_per_electron(image, b) for b in range(bands)])
    data = image.images[REFERENCE] - image.background[REFERENCE]
    nothing = np.zeros((height, width), dtype=bool)
    rows = []
    for half in (test[::2], test[1::2]):
        others = np.setdiff1d(np.arange(len(plocs)), half)
        fluxes = electrons[others, None] * per_electron[None, :]  # r's flux in every band
        catalog = FullCatalog(
            height,
            width,
            {
                "n_sources": torch.tensor([len(others)]),
                "plocs": torch.tensor(plocs[others], dtype=torch.float32)[None],
                "fluxes": torch.tensor(fluxes, dtype=torch.float32)[None],
            },
        )
        whole = {}
        for i in half:
            fit = fit_whole_star(
                data, image.background[REFERENCE], nothing, models[REFERENCE], plocs[i]
            )
            if fit is not None:
                whole[i] = fit.flux * per_electron[REFERENCE]
        offsets = np.mgrid[-8:9, -8:9]
        for radius in radii:
            disk = (offsets**2).sum(0) <= radius**2
            mask = np.zeros((bands, height, width), dtype=bool)
            for i in half:
                row, col = (int(v) for v in plocs[i])
                for band in CUT_BANDS:
                    mask[band, row - 8 : row + 9, col - 8 : col + 9] |= disk
            cut = dataclasses.replace(
                image, images=np.where(mask, np.nan, image.images), saturated=mask
            )
            stars = recover_saturated_stars(cut, catalog, models, REFERENCE)
            found = np.array([s.plocs for s in stars]).reshape(-1, 2)
            for i in half:
                if i not in whole or not len(found):
                    continue
                nearest = int(np.argmin(np.linalg.norm(found - plocs[i], axis=-1)))
                star = stars[nearest]
                if np.linalg.norm(star.plocs - plocs[i]) > 1.0:
                    continue
                rows.append(
                    {
                        "star": int(i),
                        "radius": float(radius),
                        "mag": float(22.5 - 2.5 * np.log10(whole[i])),
                        "lost": float(star.lost[REFERENCE]),
                        "log_ratio": float(np.log(star.fluxes[REFERENCE] / whole[i])),
                        "z": float(
                            (star.fluxes[REFERENCE] - whole[i]) / star.fluxes_sigma[REFERENCE]
                        ),
                    }
                )
    return rows


def summary(rows: list[dict], radii) -> list[dict]:
    out = []
    for radius in radii:
        for name, bright in (("all", False), ("r < 15.5", True)):
            pick = [r for r in rows if r["radius"] == radius and (not bright or r["mag"] < 15.5)]
            if not pick:
                continue
            ratio = np.array([r["log_ratio"] for r in pick])
            middle = float(np.median(ratio))
            out.append(
                {
                    "radius": radius,
                    "stars": name,
                    "n": len(pick),
                    "lost": float(np.median([r["lost"] for r in pick])),
                    "median_log_ratio": middle,
                    "scatter": float(1.4826 * np.median(np.abs(ratio - middle))),
                    "coverage90": float(np.mean([abs(r["z"]) < 1.645 for r in pick])),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("BLISS_SDSS_DATA", "data/sdss"))
    parser.add_argument("--fields", nargs="+", default=["94-1-12", "2583-2-136"])
    parser.add_argument("--radii", type=float, nargs="+", default=[1.5, 2.5, 3.5, 5.0])
    parser.add_argument("--out", default="saturated_stars.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from bench_sdss_bright_stars import load_frame

    rows = []
    for field in args.fields:
        image = load_frame(args.data_dir, field)
        found = measure(image, args.radii)
        print(f"{field}: {len({r['star'] for r in found})} stars")
        rows += [{"field": field, **r} for r in found]
    table = summary(rows, args.radii)
    print(
        "| R (px) | stars | n | PSF light lost | median ln(wing / whole) | scatter | 90 % coverage |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for t in table:
        print(
            f"| {t['radius']:g} | {t['stars']} | {t['n']} | {t['lost']:.2f} | "
            f"{t['median_log_ratio']:+.3f} | {t['scatter']:.3f} | {t['coverage90']:.2f} |"
        )
    with open(args.out, "w") as handle:
        json.dump({"summary": table, "stars": rows}, handle, indent=2)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
