"""Bright stars of a real SDSS frame against photoObj: catalog magnitudes and curves of growth.

Usage: python benchmarks/bench_sdss_bright_stars.py --data-dir ../shared/data/sdss \
       [--field 94-1-12] [--catalog CAT.fits] [--out DIR] [overrides ...]

Runs `bliss mode=predict survey=sdss_frames` on the field (or reads ``--catalog``), matches the
photoObj stars (``OBJC_TYPE`` 6, not ``SATUR``) within 1.5 px, and prints the r-band
``mag - psfMag`` of each star brighter than r = 17 and the median per r bin. Then, for the
isolated bright stars, it measures curves of growth on the frame (sky-subtracted r band, circular
apertures up to PHOTO's 7.43") and the same for the model PSF (the psField PSF with the model's
halo) at each star, and the ratio of PHOTO's ``psfFlux`` to the 7.43" aperture flux: what is left
between the catalog and ``psfMag`` once the PSF fits are right. Writes ``curve_of_growth.png``.
Target (issue 18): stars at r 14-17 within 0.03 mag of ``psfMag`` (median), the five brightest
within 0.05 each.
"""

import argparse
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from bench_predict_field import field_overrides, run_once

#: PHOTO's aperture for PSF magnitudes, arcsec, and the pixel scale
APERTURE_ARCSEC = 7.43
PIXEL_ARCSEC = 0.396
BINS = ((14, 17), (17, 19), (19, 20), (20, 21), (21, 22))


def load_frame(data_dir: str, field: str):
    """The SDSS frame ``field`` ("run-camcol-field") as predict reads it for the shipped model.

    Its PSF model is the psField PSF with the model's halo. Returns a ``SurveyImage``.
    """
    from hydra import compose, initialize_config_module

    from bliss.cli.model import load_model_and_survey

    with initialize_config_module("bliss.conf", version_base="1.3"):
        cfg = compose("config", overrides=field_overrides(data_dir, field))
    _, _, survey = load_model_and_survey(cfg.predict.checkpoint, cfg.survey)
    return survey.load_image(survey.bands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("BLISS_SDSS_DATA", "data/sdss"))
    parser.add_argument("--field", default="94-1-12")
    parser.add_argument("--catalog", default=None, help="a catalog of the field to score")
    parser.add_argument("--out", default="bright_stars")
    args, overrides = parser.parse_known_args()
    warnings.filterwarnings("ignore")
    from astropy.table import Table
    from scipy.spatial import cKDTree

    from bliss.surveys.sdss.aperture import sky_subtracted
    from bliss.surveys.sdss.photoobj import find_photoobj, photo_flag, read_photoobj

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run, camcol, number = (int(v) for v in args.field.split("-"))
    with tempfile.TemporaryDirectory() as tmp:
        path = args.catalog
        if path is None:
            run_once(args.data_dir, args.field, ["predict.plot=false", *overrides], Path(tmp))
            path = Path(tmp) / f"{args.field}.fits"
        catalog = Table.read(path)
    image = load_frame(args.data_dir, args.field)
    r = image.bands.index("r")
    photo = read_photoobj(
        find_photoobj(args.data_dir, run, camcol, number),
        shape=image.images.shape[1:],
        ids=(run, camcol, number),
        ignore_flags=(),
    )
    saturated = photo_flag(photo, "SATUR")
    star = (np.asarray(photo["source_type"]) == 0) & ~saturated & ~np.asarray(photo["ignore"])
    flux = np.asarray(getattr(photo["flux_r"], "value", photo["flux_r"]), dtype=float)
    mag = 22.5 - 2.5 * np.log10(np.clip(flux, 1e-9, None))
    xy = np.stack([np.asarray(getattr(photo[k], "value", photo[k])) for k in "xy"], -1)
    ours = np.stack([np.asarray(catalog["x"]), np.asarray(catalog["y"])], -1)
    distance, nearest = cKDTree(ours).query(xy)
    matched = star & (distance < 1.5)
    dmag = -2.5 * np.log10(np.asarray(catalog["flux_r"], dtype=float)[nearest] / flux)

    print(f"{args.field}: {int(saturated.sum())} photoObj objects with SATUR in r (left out)")
    bright = np.flatnonzero(matched & (mag < 17))
    print("psfMag   catalog - psfMag   flags")
    for i in bright[np.argsort(mag[bright])]:
        print(f"{mag[i]:6.2f}   {dmag[i]:+.3f}            {int(catalog['flags'][nearest[i]])}")
    for low, high in BINS:
        inside = matched & (mag >= low) & (mag < high)
        if inside.any():
            print(
                f"r {low}-{high}: {int(inside.sum())} stars, median {np.median(dmag[inside]):+.3f}"
            )
    five = bright[np.argsort(mag[bright])][:5]
    print(f"five brightest: {', '.join(f'{d:+.3f}' for d in dmag[five])}")

    # curves of growth of isolated bright stars, against the model PSF's
    import sep

    light, masked = sky_subtracted(image.images[r], image.background[r])
    radii = np.linspace(1.0, APERTURE_ARCSEC / PIXEL_ARCSEC, 24)
    # no other catalog source within the largest aperture (and 3 px more)
    isolated = cKDTree(ours).query(xy[bright], k=2)[0][:, 1] > radii[-1] + 3
    data_curves, model_curves, ratios = [], [], []
    for i in bright[isolated]:
        col, row = xy[i]
        sums, _, flags = sep.sum_circle(
            light, [col] * len(radii), [row] * len(radii), radii, mask=masked
        )
        if np.any(flags) or not sums[-1] > 0:
            continue
        psf = np.ascontiguousarray(image.psf(r, row, col), dtype=np.float64)
        centre = (psf.shape[0] - 1) / 2
        model, _, _ = sep.sum_circle(psf, [centre] * len(radii), [centre] * len(radii), radii)
        data_curves.append(sums / sums[-1])
        model_curves.append(model / model[-1])
        per_electron = 10 ** (-0.4 * (float(image.magzero[r]) - 22.5))
        ratios.append(flux[i] / (sums[-1] * per_electron))
    if not ratios:
        print("no isolated unmasked bright star for curves of growth")
        return
    ratios = np.array(ratios)
    print(
        f'PHOTO psfFlux / 7.43" aperture flux (this sky), {len(ratios)} isolated stars: median '
        f"{np.median(ratios):.4f} ({-2.5 * np.log10(np.median(ratios)):+.3f} mag)"
    )
    if image.aperture_correction is not None:
        print(f"frame aperture correction (r): {float(image.aperture_correction[r]):.4f}")

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    arcsec = radii * PIXEL_ARCSEC
    for curve in data_curves:
        axes.plot(arcsec, curve, color="0.7", lw=0.8)
    axes.plot(arcsec, np.median(data_curves, 0), color="k", lw=2, label="stars (median)")
    axes.plot(arcsec, np.median(model_curves, 0), color="C1", lw=2, label="psField PSF + halo")
    axes.set_xlabel("aperture radius (arcsec)")
    axes.set_ylabel(f'flux / flux within {APERTURE_ARCSEC}"')
    axes.set_title(f"{args.field}, r band: curves of growth of {len(ratios)} isolated stars")
    axes.legend()
    figure.savefig(out / "curve_of_growth.png", dpi=120)
    print(f"-> {out / 'curve_of_growth.png'}")


if __name__ == "__main__":
    main()
