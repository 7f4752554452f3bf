"""A weak-lensing null test on a real SDSS frame: mean galaxy ellipticity and PSF leakage.

A single SDSS field (0.04 deg^2) holds no measurable cosmic shear (|g| ~ 0.01, far below its
shape noise over a few hundred galaxies), so the mean ellipticity of its galaxies should be
consistent with zero, and it should not follow the PSF's ellipticity. A shape estimator that does
not remove the PSF fully leaks it: ``e_gal = c + alpha e_psf``, with ``alpha = 0`` for a perfect
one.

The galaxies are a ``bliss mode=predict`` catalog's (the shipped SDSS generalist):
``prob_galaxy > 0.5``, r brighter than ``--max-mag``, no ``edge``, ``near_bright`` or
``blended`` flag. Two ellipticities per galaxy, both of the galaxy before the PSF and of the
reduced-shear kind:

* ``posterior``: the catalog's ``e1``, ``e2``, the posterior median of the ellipticity
  (:mod:`bliss.predict.shape_ellipticity`);
* ``point``: the ellipticity of the point estimates of the six shape columns
  (:func:`bliss.catalog.ellipticity.galaxy_ellipticity`), which is biased where the orientation
  is unknown.

The PSF's ellipticity at each galaxy is that of the frame's r-band psField PSF there (adaptive
moments, GalSim HSM). Frame-level numbers per estimator: mean ``e1`` and ``e2`` with standard
errors; ``alpha`` and ``c`` from least squares per component. An ellipticity is not a shear:
``--sim-catalogs`` and ``--sim-truth`` (catalogs predicted on ``bliss mode=simulate`` fields, and
their truth tables) give the response ``R``, the slope of the estimate on the true ellipticity,
by which a mean ellipticity or a leakage must be divided to be read as a shear.

    bliss mode=predict survey=sdss_frames survey.data_dir=DIR survey.run=94 survey.camcol=1 \\
        survey.field=12 predict.output=94-1-12.fits
    bliss mode=simulate survey=sdss simulate.n_fields=12 simulator.image_size=320 \\
        prior.density_per_arcmin2=20 prior.prob_galaxy=0.9 simulate.output=sim
    bliss mode=predict survey=sdss 'predict.input=sim/field_*.fits' predict.output=sim_cat
    python case_studies/weak_lensing/sdss_null_test.py --catalog 94-1-12.fits \\
        --psfield DIR/94/1/12/psField-000094-1-0012.fit --sim-catalogs sim_cat --sim-truth sim \\
        --out case_studies/weak_lensing/results
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
from astropy.table import Table

from bliss.catalog import GALAXY_KEYS
from bliss.catalog.ellipticity import galaxy_ellipticity
from bliss.catalog.flags import flag_value
from bliss.catalog.io import column_values
from bliss.errors import BlissIOError
from bliss.metrics import shear_bias
from bliss.surveys.sdss.psf import SdssPsf

#: catalog flags that make a shape untrustworthy (not ``masked``: on SDSS frames it marks 30 % of
#: the sources, mostly where the u, g, i or z frame does not cover the r grid)
EXCLUDED_FLAGS = ("edge", "near_bright", "blended")


def select_galaxies(catalog: Table, max_mag: float) -> np.ndarray:
    """Rows of confident, clean galaxies brighter than ``max_mag`` in r."""
    needed = ("prob_galaxy", "mag_r", "flags", "e1", "e2", *GALAXY_KEYS)
    missing = [k for k in needed if k not in catalog.colnames]
    if missing:
        raise BlissIOError(
            f"the catalog has no column(s) {missing}; expected a bliss mode=predict catalog of a "
            "model with galaxy shapes (e.g. the shipped sdss_generalist)."
        )
    flags = np.asarray(catalog["flags"], dtype=np.int64)
    keep = (np.asarray(catalog["prob_galaxy"]) > 0.5) & (column_values(catalog, "mag_r") < max_mag)
    return np.flatnonzero(keep & ((flags & flag_value(*EXCLUDED_FLAGS)) == 0))


def galaxy_shapes(catalog: Table, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Each estimator's ``(e1, e2)`` of the selected galaxies. Shape ``n 2`` each."""
    params = np.stack([column_values(catalog, k)[rows] for k in GALAXY_KEYS], axis=-1)
    return {
        "posterior": np.stack(
            [column_values(catalog, "e1")[rows], column_values(catalog, "e2")[rows]], -1
        ),
        "point": galaxy_ellipticity(params),
    }


def response(catalogs: Path, truths: Path, max_mag: float) -> dict[str, list[float]]:
    """Per estimator, the slope of the estimated on the true ellipticity (``e1``, ``e2``).

    Catalogs ``<catalogs>/<name>.fits`` are matched to truth tables ``<truths>/truth_<i>.fits``
    of fields ``field_<i>.fits`` (``bliss mode=simulate``), true galaxies within 1.5 px.
    """
    from scipy.spatial import cKDTree

    estimated: dict[str, list[np.ndarray]] = {"posterior": [], "point": []}
    true = []
    paths = sorted(Path(catalogs).glob("field_*.fits"))
    if not paths:
        raise BlissIOError(f"{catalogs} holds no field_*.fits catalogs of simulated fields.")
    for path in paths:
        truth = Table.read(Path(truths) / path.name.replace("field_", "truth_"))
        catalog = Table.read(path)
        rows = select_galaxies(catalog, max_mag)
        galaxy = np.flatnonzero(column_values(truth, "source_type") == 1)
        if not len(rows) or not len(galaxy):
            continue
        tree = cKDTree(
            np.stack([column_values(truth, "x")[galaxy], column_values(truth, "y")[galaxy]], -1)
        )
        xy = np.stack([column_values(catalog, "x")[rows], column_values(catalog, "y")[rows]], -1)
        distance, nearest = tree.query(xy)
        ok = distance < 1.5
        for name, e in galaxy_shapes(catalog, rows[ok]).items():
            estimated[name].append(e)
        params = np.stack([column_values(truth, k)[galaxy[nearest[ok]]] for k in GALAXY_KEYS], -1)
        true.append(galaxy_ellipticity(params))
    truth_e = np.concatenate(true)
    out: dict[str, list[float]] = {"n_galaxies": [float(len(truth_e))]}
    for name, parts in estimated.items():
        e = np.concatenate(parts)
        out[name] = [float(np.polyfit(truth_e[:, k], e[:, k], 1)[0]) for k in range(2)]
    return out


def psf_shapes(psf: SdssPsf, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(e1, e2)`` of the PSF at each ``(x, y)`` (column, row), reduced-shear kind. Shape ``n 2``."""
    import galsim

    shapes = []
    for col, row in zip(x, y, strict=True):
        image = galsim.Image(np.ascontiguousarray(psf.image(row, col), dtype=np.float64))
        moments = galsim.hsm.FindAdaptiveMom(image)
        shapes.append((moments.observed_shape.g1, moments.observed_shape.g2))
    return np.array(shapes)


def leakage(e_gal: np.ndarray, e_psf: np.ndarray) -> dict[str, dict[str, float]]:
    """Least squares ``e_gal = c + alpha e_psf`` per component (``n 2`` each), with errors.

    It is :func:`bliss.metrics.shear_bias`'s regression, with ``alpha = 1 + m``.
    """
    fit = shear_bias(e_gal, e_psf)
    return {
        name: {
            "c": fit[f"c{k}"],
            "c_se": fit[f"c{k}_err"],
            "alpha": 1.0 + fit[f"m{k}"],
            "alpha_se": fit[f"m{k}_err"],
        }
        for k, name in ((1, "e1"), (2, "e2"))
    }


def null_test(e_gal: np.ndarray, e_psf: np.ndarray) -> dict:
    """Mean ellipticity (with standard errors and z-scores) and leakage per component."""
    n = len(e_gal)
    report: dict = {"n_galaxies": n, "shape_noise": float(np.std(e_gal, ddof=1))}
    fits = leakage(e_gal, e_psf)
    for k, name in enumerate(("e1", "e2")):
        mean = float(np.mean(e_gal[:, k]))
        se = float(np.std(e_gal[:, k], ddof=1) / math.sqrt(n))
        report[name] = {
            "mean": mean,
            "se": se,
            "z": mean / se if se > 0 else float("nan"),
            "psf_mean": float(np.mean(e_psf[:, k])),
            "psf_sd": float(np.std(e_psf[:, k], ddof=1)),
            **fits[name],
        }
    return report


def plot(
    shapes: dict[str, np.ndarray], e_psf: np.ndarray, x: np.ndarray, y: np.ndarray, path: Path
) -> None:
    """Galaxy against PSF ellipticity per component and estimator, and the PSF's whisker map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for k, component in enumerate(("e1", "e2")):
        for name, e in shapes.items():
            axes[k].scatter(e_psf[:, k], e[:, k], s=6, alpha=0.5, label=name)
            axes[k].axhline(
                float(np.mean(e[:, k])), lw=1, color=axes[k].collections[-1].get_facecolor()[0]
            )
        axes[k].axhline(0, color="k", lw=0.5)
        axes[k].set_xlabel(f"PSF {component}")
        axes[k].set_ylabel(f"galaxy {component} (line: mean)")
        axes[k].legend(fontsize=7)
    magnitude = np.hypot(e_psf[:, 0], e_psf[:, 1])
    angle = 0.5 * np.arctan2(e_psf[:, 1], e_psf[:, 0])
    scale = 3000.0  # px per unit ellipticity
    axes[2].quiver(
        x,
        y,
        magnitude * np.cos(angle) * scale,
        magnitude * np.sin(angle) * scale,
        angles="xy",
        scale_units="xy",
        scale=1,
        headwidth=0,
        headlength=0,
        headaxislength=0,
        pivot="middle",
    )
    axes[2].set_title(f"PSF e (whisker {0.05 * scale:.0f} px = 0.05)")
    axes[2].set_xlabel("x (px)")
    axes[2].set_ylabel("y (px)")
    axes[2].set_aspect("equal")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", required=True, help="a bliss mode=predict catalog (FITS)")
    parser.add_argument("--psfield", required=True, help="the frame's psField file")
    parser.add_argument("--band", default="r")
    parser.add_argument("--max-mag", type=float, default=21.5)
    parser.add_argument("--sim-catalogs", default=None, help="catalogs of simulated fields")
    parser.add_argument("--sim-truth", default=None, help="their bliss mode=simulate directory")
    parser.add_argument("--out", default="outputs/sdss_null_test")
    args = parser.parse_args(argv)
    catalog = Table.read(args.catalog)
    rows = select_galaxies(catalog, args.max_mag)
    if len(rows) < 10:
        raise BlissIOError(
            f"{args.catalog}: {len(rows)} clean galaxies brighter than r = {args.max_mag}; a null "
            "test needs at least 10 (raise --max-mag or use a larger field)."
        )
    x, y = column_values(catalog, "x")[rows], column_values(catalog, "y")[rows]
    shapes = galaxy_shapes(catalog, rows)
    e_psf = psf_shapes(SdssPsf.from_psfield(args.psfield, args.band), x, y)
    report: dict = {"config": vars(args)}
    report.update({name: null_test(e, e_psf) for name, e in shapes.items()})
    if args.sim_catalogs and args.sim_truth:
        report["response"] = response(Path(args.sim_catalogs), Path(args.sim_truth), args.max_mag)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sdss_null_test.json").write_text(json.dumps(report, indent=1))
    plot(shapes, e_psf, x, y, out / "sdss_null_test.png")
    for name in shapes:
        for component in ("e1", "e2"):
            r = report[name][component]
            print(
                f"{name:9s} {component}: mean {r['mean']:+.4f} ± {r['se']:.4f} (z {r['z']:+.2f}); "
                f"alpha {r['alpha']:+.2f} ± {r['alpha_se']:.2f}; PSF {r['psf_mean']:+.4f} "
                f"(sd {r['psf_sd']:.4f})"
            )
    if "response" in report:
        print(f"response R (e1, e2) on simulations: {report['response']}")
    print(f"{report['posterior']['n_galaxies']} galaxies -> {out}")
    return report


if __name__ == "__main__":
    main()
