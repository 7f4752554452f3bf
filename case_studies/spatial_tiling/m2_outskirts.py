"""Catalogs of M2's outskirts (SDSS 2583-2-136) against DAOPHOT-style PSF photometry, block by block.

Between the sparse sky and the crowded core that the crowded model catalogs, the main model
sees fields several times denser than its training prior; `predict.density` moves its count
prior there (docs/crowded.md). This compares catalogs of the frame (e.g. with and without it)
on 128 px blocks against photutils `IterativePSFPhotometry` on the r-band frame with the
psField PSF at each block's centre: the share of photutils stars brighter than r = 21 that a
catalog finds within 1 px, and how many of the catalog's sources brighter than r = 22 have no
photutils source within 1.5 px (found by nothing else; not all of them false), and how many
sources it calls galaxies.

    bliss mode=predict survey=sdss_frames survey.data_dir=DIR survey.run=2583 survey.camcol=2 \\
        survey.field=136 predict.output=m2.fits
    bliss ... predict.output=m2_fixed_prior.fits predict.density=null
    python case_studies/spatial_tiling/m2_outskirts.py --sdss-data DIR \\
        --catalogs adapted=m2.fits fixed=m2_fixed_prior.fits

Writes ``--out``/m2_outskirts.json.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

from bliss.catalog.convert import nmgy_per_electron
from bliss.surveys.sdss.frames import read_sdss_field
from bliss.surveys.sdss.psf import SDSS_PIXEL_SCALE_ARCSEC

sys.path.insert(0, str(Path(__file__).parent))
from baselines import daophot_catalog  # noqa: E402

M2 = (2583, 2, 136)
BLOCK_PX = 128
#: (row, column) of 128 px blocks outside the crowded core that the shipped model moves to a
#: denser prior (those whose catalog gains the most sources)
DEFAULT_BLOCKS = ["2,4", "4,7", "2,5", "4,6", "1,3", "1,2", "8,8"]
CONTEXT_PX = 16  # image around a block that photutils also fits


def block_photometry(field, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
    """photutils stars inside one block (frame pixels) and their r magnitudes."""
    band = field.bands.index("r")
    r0, c0 = max(row * BLOCK_PX - CONTEXT_PX, 0), max(col * BLOCK_PX - CONTEXT_PX, 0)
    rows = slice(r0, (row + 1) * BLOCK_PX + CONTEXT_PX)
    cols = slice(c0, (col + 1) * BLOCK_PX + CONTEXT_PX)
    image = field.images[band][rows, cols].astype(np.float64)
    sky = field.background[band][rows, cols].astype(np.float64)
    centre = ((rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2)
    psf = field.psf_image("r", *centre)
    fwhm_arcsec = field.frames["r"].psf.fwhm_arcsec(
        *field.band_pixel("r", *centre), method="moffat"
    )
    # masked pixels (saturated, interpolated) are set to the sky for the finder
    filled = np.where(np.isfinite(image), image, sky)
    plocs, electrons = daophot_catalog(filled, sky, psf, fwhm_arcsec / SDSS_PIXEL_SCALE_ARCSEC)
    plocs = plocs + np.array([r0, c0])
    nmgy = electrons * nmgy_per_electron(float(field.magzero[band]))
    mags = 22.5 - 2.5 * np.log10(np.clip(nmgy, 1e-6, None))
    inside = _in_block(plocs, row, col)
    return plocs[inside], mags[inside]


def _in_block(plocs: np.ndarray, row: int, col: int) -> np.ndarray:
    top, left = row * BLOCK_PX, col * BLOCK_PX
    return (
        (plocs[:, 0] >= top)
        & (plocs[:, 0] < top + BLOCK_PX)
        & (plocs[:, 1] >= left)
        & (plocs[:, 1] < left + BLOCK_PX)
    )


def compare(table: Table, phot: np.ndarray, phot_mag: np.ndarray, row: int, col: int) -> dict:
    """One catalog against photutils on one block."""
    plocs = np.c_[np.asarray(table["y"], float), np.asarray(table["x"], float)]
    mags = np.asarray(table["mag_r"], float)
    inside = _in_block(plocs, row, col)
    ours, ours_mag = plocs[inside], mags[inside]
    galaxy = np.asarray(table["prob_galaxy"], float).ravel()[inside] > 0.5
    bright = phot[phot_mag < 21]
    found = int((cKDTree(ours).query(bright)[0] < 1.0).sum()) if len(ours) and len(bright) else 0
    ours22 = ours[ours_mag < 22]
    alone = int((cKDTree(phot).query(ours22)[0] > 1.5).sum()) if len(phot) and len(ours22) else 0
    return {
        "photutils_r_lt_21": len(bright),
        "found": found,
        "catalog_r_lt_22": len(ours22),
        "without_photutils": alone,
        "catalog_all": len(ours),
        # a cluster's outskirts are nearly all stars: ~2-3 galaxies of r < 21 are expected in
        # seven 128 px blocks (5 arcmin²) at SDSS's galaxy counts
        "galaxies_r_lt_21": int((galaxy & (ours_mag < 21)).sum()),
        "galaxies_all": int(galaxy.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdss-data", default=os.environ.get("BLISS_SDSS_DATA", "data/sdss"))
    parser.add_argument("--catalogs", nargs="+", required=True, help="NAME=catalog.fits ...")
    parser.add_argument("--blocks", nargs="+", default=DEFAULT_BLOCKS, help="ROW,COL ...")
    parser.add_argument("--out", default="case_studies/spatial_tiling/results")
    args = parser.parse_args()
    catalogs, paths = {}, {}
    for spec in args.catalogs:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            parser.error(f"--catalogs {spec!r}: expected NAME=PATH to an existing catalog")
        catalogs[name], paths[name] = Table.read(path), path
    field = read_sdss_field(args.sdss_data, *M2, bands=tuple("ugriz"))
    per_block = {}
    for spec in args.blocks:
        row, col = (int(v) for v in spec.split(","))
        phot, phot_mag = block_photometry(field, row, col)
        per_block[spec] = {
            name: compare(table, phot, phot_mag, row, col) for name, table in catalogs.items()
        }
        print(spec, json.dumps(per_block[spec]), flush=True)
    totals = {
        name: {
            key: sum(block[name][key] for block in per_block.values())
            for key in next(iter(per_block.values()))[name]
        }
        for name in catalogs
    }
    for total in totals.values():
        total["share_found"] = total["found"] / max(total["photutils_r_lt_21"], 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"blocks": per_block, "totals": totals, "catalogs": paths}
    (out / "m2_outskirts.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(totals, indent=2))


if __name__ == "__main__":
    main()
