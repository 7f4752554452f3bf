"""Fit the crowded prior's luminosity function and locate the cluster on the SDSS frame of M2.

No HST data: the cluster centre is the peak of the r-band light smoothed over 101 x 101 px, and
the luminosity function is the power law ``N(> F) ~ F^-alpha`` fitted by maximum likelihood to
the stars that ``sep`` finds on the frame's outskirts (beyond ``--min-radius`` px from the
centre, where crowding no longer limits completeness) within a magnitude range where the
frame is complete. The saturation level of each band is the largest count (electrons, sky
included) of a pixel the fpM ``SATUR`` plane does not flag, on the grid ``mode=predict`` reads
(a lower bound of the detector's level; the ``u`` band of this frame has no saturated pixel).
Prints the numbers the ``crowded`` presets record and writes a PNG of the fitted magnitude
histogram.

    python case_studies/spatial_tiling/fit_prior.py --sdss-data ../shared/data/sdss
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.optimize import minimize_scalar

from bliss.catalog.convert import nmgy_per_electron
from bliss.surveys.sdss.frames import read_sdss_field

M2 = (2583, 2, 136)
BANDS = ("u", "g", "r", "i", "z")


def power_law_alpha(flux: np.ndarray, low: float, high: float) -> float:
    """Maximum-likelihood ``alpha`` of ``p(F) ~ F^-(alpha + 1)`` truncated to ``[low, high]``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> u = rng.random(20000)
        >>> flux = 1.0 * (1 - u * (1 - 100.0**-0.8)) ** (-1 / 0.8)  # alpha = 0.8 on [1, 100]
        >>> abs(power_law_alpha(flux, 1.0, 100.0) - 0.8) < 0.03  # 5 standard errors
        True
    """
    flux = flux[(flux >= low) & (flux <= high)]
    log_sum = np.log(flux).sum()

    def nll(alpha: float) -> float:
        norm = np.log(low**-alpha - high**-alpha)
        return -(len(flux) * (np.log(alpha) - norm) - (alpha + 1) * log_sum)

    return float(minimize_scalar(nll, bounds=(1e-3, 5.0), method="bounded").x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdss-data", default=os.environ.get("BLISS_SDSS_DATA", "data/sdss"))
    parser.add_argument("--min-radius", type=float, default=700.0, help="px from the centre")
    parser.add_argument("--mag-range", type=float, nargs=2, default=[16.0, 20.5])
    parser.add_argument("--out", default="case_studies/spatial_tiling/results")
    args = parser.parse_args()
    import sep

    field = read_sdss_field(args.sdss_data, *M2, bands=BANDS)
    saturation = {
        band: float(np.nanmax(np.where(field.saturated[i], np.nan, field.images[i])))
        for i, band in enumerate(BANDS)
    }
    frame = field.frames["r"]
    light = np.nan_to_num(frame.electrons - frame.sky)
    smooth = ndimage.uniform_filter(light, 101)
    row, col = np.unravel_index(np.argmax(smooth), smooth.shape)
    data = np.ascontiguousarray(light, dtype=np.float64)
    error = np.sqrt(np.clip(np.nan_to_num(frame.electrons), 1.0, None))
    sep.set_extract_pixstack(5_000_000)
    objects = sep.extract(data, 5.0, err=error, minarea=5, deblend_cont=1e-3)
    flux, _, _ = sep.sum_circle(data, objects["x"], objects["y"], 7.0, err=error)
    radius = np.hypot(objects["y"] - row, objects["x"] - col)
    flux_nmgy = flux * nmgy_per_electron(frame.magzero)
    bright, faint = args.mag_range
    low, high = 10 ** (-0.4 * (faint - 22.5)), 10 ** (-0.4 * (bright - 22.5))
    outskirts = (radius > args.min_radius) & (flux_nmgy > 0)
    alpha = power_law_alpha(flux_nmgy[outskirts], low, high)
    n_fit = int(((flux_nmgy >= low) & (flux_nmgy <= high) & outskirts).sum())
    result = {
        "centre_row_col_px": [int(row), int(col)],
        "alpha": alpha,
        "n_stars_fitted": n_fit,
        "mag_range": args.mag_range,
        "min_radius_px": args.min_radius,
        "saturation_electrons": saturation,
        "saturated_pixels": {band: int(field.saturated[i].sum()) for i, band in enumerate(BANDS)},
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fit_prior.json").write_text(json.dumps(result, indent=2))
    _plot(flux_nmgy[outskirts], alpha, args.mag_range, n_fit, out / "luminosity_function.png")


def _plot(flux_nmgy: np.ndarray, alpha: float, mag_range, n_fit: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mag = 22.5 - 2.5 * np.log10(flux_nmgy)
    edges = np.arange(14.0, 23.01, 0.25)
    counts, _ = np.histogram(mag, edges)
    centres = (edges[1:] + edges[:-1]) / 2
    # dN/dm ~ 10^(0.4 alpha m), normalised to the stars in the fitted range
    fitted = (centres >= mag_range[0]) & (centres <= mag_range[1])
    model = 10 ** (0.4 * alpha * centres)
    model *= n_fit / model[fitted].sum()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.step(centres, counts, where="mid", label="sep, outskirts of 2583-2-136")
    ax.plot(centres[fitted], model[fitted], "r-", label=f"power law, alpha = {alpha:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("r (mag)")
    ax.set_ylabel("stars per 0.25 mag")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
