"""Real-frame checks on the core of M2 (SDSS 2583-2-136) that need no HST catalog.

On a region of the frame (default rows 580-780, columns 260-460, the region the issue names):

* the crowded model's catalog (point estimate) against DAOPHOT-style PSF photometry (photutils,
  the psField PSF at the region's centre): the share of photutils stars brighter than r = 20 that
  BLISS finds within 1 px, and the counts of both brighter than r = 22;
* a posterior predictive check: joint posterior samples rendered with the psField PSF and the
  frame's sky, and the residual chi^2 per pixel against photutils' residual image;
* a PNG of the region with both catalogs;
* split bright stars: the mean number of r < 22 detections within 2.5 px of each detection
  brighter than r = 17.5, against the number the catalog's own mean density puts there, for
  both catalogs (a catalog that splits a bright star into pieces has an excess);
* the brightest stars: of photutils' stars brighter than r = 15, the share BLISS finds whole (a
  detection within 1 px and 0.5 mag); and the saturated stars, whose cores are missing (NaN, fpM
  SATUR) so that photutils cannot fit them: how many BLISS detections brighter than r = 22 lie
  within 5 px of each core against the region's density, and how many cores get a detection
  brighter than r = 15.

    python case_studies/spatial_tiling/m2_core.py --checkpoint K4.ckpt --sdss-data ../shared/data/sdss

``--catalog CAT.fits`` scores the catalog ``mode=predict`` wrote for the frame (the product, with
its saturated stars measured on their wings) instead of the network's point estimate; the
posterior predictive check still draws the network's samples.

Everything lands in ``--out`` (``m2_core.json``, ``m2_core.png``).
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bliss.catalog import FullCatalog
from bliss.catalog.convert import nmgy_per_electron
from bliss.catalog.io import xy_to_plocs
from bliss.encoder.checkpoint import load_encoder
from bliss.encoder.encoder import Encoder
from bliss.metrics import match_catalogs
from bliss.simulator.torch_render import TorchRenderer
from bliss.surveys.sdss.frames import SdssField, read_sdss_field
from bliss.surveys.sdss.psf import SDSS_PIXEL_SCALE_ARCSEC

sys.path.insert(0, str(Path(__file__).parent))
from baselines import daophot_catalog  # noqa: E402
from crowded_metrics import bright_star_score, neighbours_of_bright  # noqa: E402

M2 = (2583, 2, 136)
SATURATED_RADIUS_PX = 5.0


def saturated_cores(saturated: np.ndarray, max_side_px: int = 20) -> np.ndarray:
    """Centres ``n 2`` (``plocs`` convention) of the compact blobs of ``saturated`` pixels.

    A saturated star's core is a blob a few pixels across; a bleed trail is one pixel wide or
    long, and is left out.
    """
    from scipy import ndimage

    labels, _ = ndimage.label(saturated)
    centres = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        sides = [box[0].stop - box[0].start, box[1].stop - box[1].start]
        if min(sides) < 2 or max(sides) > max_side_px:
            continue
        centres.append(np.array(ndimage.center_of_mass(labels == index)) + 0.5)
    return np.array(centres).reshape(-1, 2)


@dataclass
class Core:
    """A crowded model and the encoder inputs of a region of the M2 frame with its margin."""

    encoder: Encoder
    bands: tuple[str, ...]
    band: int  # the reference band's index
    field: SdssField
    rows: slice  # of the frame, margin included
    cols: slice
    inputs: dict
    #: electrons per nanomaggy of the model's training survey, which its fluxes are in
    model_e_per_nmgy: float


def load_core(checkpoint: str, sdss_data: str, rows: list, cols: list, margin: int) -> Core:
    """The model of ``checkpoint`` and the inputs of frame ``rows`` x ``cols`` (``[start, stop]``)."""
    encoder, config = load_encoder(checkpoint)
    bands = tuple(encoder.bands)
    band = encoder.reference_index
    model_survey = instantiate(OmegaConf.create(config["survey"]))
    field = read_sdss_field(sdss_data, *M2, bands=bands)
    rows_m = slice(rows[0] - margin, rows[1] + margin)
    cols_m = slice(cols[0] - margin, cols[1] + margin)
    return Core(
        encoder,
        bands,
        band,
        field,
        rows_m,
        cols_m,
        crop_inputs(field, rows_m, cols_m, bands),
        # the network's nanomaggies are the training survey's; the frame's differ by its zero point
        1.0 / nmgy_per_electron(float(model_survey.magzero(bands[band]))),
    )


def crop_inputs(field, rows: slice, cols: slice, bands: tuple[str, ...]) -> dict:
    """The encoder's inputs for a crop of an aligned SDSS field (batch of one)."""
    index = [field.bands.index(b) for b in bands]
    centre = ((rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2)
    fwhm = [
        field.frames[b].psf.fwhm_arcsec(*field.band_pixel(b, *centre), method="moffat")
        for b in bands
    ]
    return {
        "images": torch.from_numpy(field.images[index][:, rows, cols].copy()).float()[None],
        "background": torch.from_numpy(field.background[index][:, rows, cols].copy()).float()[None],
        "psf_fwhm_arcsec": torch.tensor([fwhm], dtype=torch.float32),
    }


def render_stars(
    plocs: list, electrons: list, psfs: np.ndarray, shape: tuple[int, int]
) -> torch.Tensor:
    """Star catalogs rendered with one PSF image per band. Shape ``s c h w``, electrons.

    ``plocs`` (``n 2``) and ``electrons`` (``n c``) hold one catalog per sample ``s``; ``psfs``
    is ``c k k``.
    """
    n_max = max(1, max(len(p) for p in plocs))
    n, n_bands = len(plocs), psfs.shape[0]
    data = {
        "n_sources": torch.tensor([len(p) for p in plocs]),
        "plocs": torch.zeros(n, n_max, 2),
        "fluxes": torch.zeros(n, n_max, n_bands),
    }
    for i, (p, f) in enumerate(zip(plocs, electrons, strict=True)):
        data["plocs"][i, : len(p)] = torch.as_tensor(p, dtype=torch.float32)
        data["fluxes"][i, : len(f)] = torch.as_tensor(f, dtype=torch.float32)
    unit = psfs / psfs.sum(axis=(-2, -1), keepdims=True)
    images = torch.as_tensor(unit, dtype=torch.float32).expand(n, *psfs.shape)
    # with PSF images the FWHM is only a label
    return TorchRenderer(max_stamp_px=64).render(
        FullCatalog(shape[0], shape[1], data),
        torch.ones(n, n_bands),
        SDSS_PIXEL_SCALE_ARCSEC,
        image_psfs=(images.contiguous(), torch.ones(n)),
    )


def catalog_stars(
    path: str, rows: slice, cols: slice, margin: int, frame_nmgy: float
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (``n 2``, the region's pixels) and r electrons of a predict catalog's region."""
    table = Table.read(path)
    plocs = xy_to_plocs(np.asarray(table["x"]), np.asarray(table["y"]))
    plocs = plocs - np.array([rows.start, cols.start])
    height, width = rows.stop - rows.start, cols.stop - cols.start
    keep = (
        (plocs[:, 0] >= margin)
        & (plocs[:, 0] < height - margin)
        & (plocs[:, 1] >= margin)
        & (plocs[:, 1] < width - margin)
    )
    return plocs[keep], np.asarray(table["flux_r"], dtype=np.float64)[keep] / frame_nmgy


def add_region_arguments(parser: argparse.ArgumentParser) -> None:
    """The frame files and the core region (rows, columns, context margin) a script reads."""
    parser.add_argument("--sdss-data", default=os.environ.get("BLISS_SDSS_DATA", "data/sdss"))
    parser.add_argument("--rows", type=int, nargs=2, default=[580, 780])
    parser.add_argument("--cols", type=int, nargs=2, default=[260, 460])
    parser.add_argument("--margin", type=int, default=16, help="px of context around the region")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the crowded model (K = 4)")
    add_region_arguments(parser)
    parser.add_argument("--samples", type=int, default=20, help="joint samples for the check")
    parser.add_argument(
        "--catalog",
        help="score this mode=predict catalog of the frame (FITS) instead of the network's point "
        "estimate; the posterior predictive check still draws the network's samples",
    )
    parser.add_argument("--out", default="case_studies/spatial_tiling/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    core = load_core(args.checkpoint, args.sdss_data, args.rows, args.cols, args.margin)
    encoder, bands, band, field = core.encoder, core.bands, core.band, core.field
    rows, cols, inputs, m = core.rows, core.cols, core.inputs, args.margin
    to_electrons = core.model_e_per_nmgy
    frame_nmgy = nmgy_per_electron(float(field.magzero[band]))

    features = encoder.tile_features(inputs)
    with torch.no_grad():
        estimate, _ = encoder.infer_from_features(features)
        samples, _ = encoder.infer_from_features(
            features.expand(args.samples, *features.shape[1:]), sample=True
        )
    height, width = inputs["images"].shape[-2:]
    inner = (slice(m, height - m), slice(m, width - m))

    def stars(catalog: FullCatalog, index: int) -> tuple[np.ndarray, np.ndarray]:
        n = int(catalog["n_sources"][index])
        plocs = catalog["plocs"][index, :n].double().numpy()
        electrons = catalog["fluxes"][index, :n, band].double().numpy() * to_electrons
        keep = (
            (plocs[:, 0] >= m)
            & (plocs[:, 0] < height - m)
            & (plocs[:, 1] >= m)
            & (plocs[:, 1] < width - m)
        )
        return plocs[keep], electrons[keep]

    def mag(electrons: np.ndarray) -> np.ndarray:
        return 22.5 - 2.5 * np.log10(np.clip(electrons * frame_nmgy, 1e-6, None))

    bliss_plocs, bliss_e = stars(estimate.to_full_catalog(), 0)
    if args.catalog:  # the product of mode=predict instead of the network's point estimate
        bliss_plocs, bliss_e = catalog_stars(args.catalog, rows, cols, m, frame_nmgy)
    image = inputs["images"][0, band].numpy().astype(np.float64)
    masked = float(np.isnan(image[m:-m, m:-m]).mean())
    sky = inputs["background"][0, band].numpy().astype(np.float64)
    centre = ((rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2)
    psf = field.psf_image(bands[band], *centre)
    fwhm_px = float(inputs["psf_fwhm_arcsec"][0, band]) / SDSS_PIXEL_SCALE_ARCSEC
    phot_all = daophot_catalog(image, sky, psf, fwhm_px)
    phot_plocs, phot_e = phot_all
    in_region = (
        (phot_plocs[:, 0] >= m)
        & (phot_plocs[:, 0] < height - m)
        & (phot_plocs[:, 1] >= m)
        & (phot_plocs[:, 1] < width - m)
    )
    phot_plocs, phot_e = phot_plocs[in_region], phot_e[in_region]

    bright = mag(phot_e) < 20.0
    true_idx, _ = match_catalogs(
        torch.as_tensor(phot_plocs[bright]), torch.as_tensor(bliss_plocs), max_dist_px=1.0
    )
    found_share = true_idx.numel() / max(int(bright.sum()), 1)

    # posterior predictive check on the region; the margin's sources are drawn too
    drawn = samples.to_full_catalog()
    sample_cats = [stars(drawn, i) for i in range(args.samples)]
    counts = [int(n) for n in drawn["n_sources"]]
    rendered = render_stars(
        [drawn["plocs"][i, : counts[i]].numpy() for i in range(args.samples)],
        [
            drawn["fluxes"][i, : counts[i], band, None].numpy() * to_electrons
            for i in range(args.samples)
        ],
        psf[None],
        (height, width),
    )[:, 0]
    variance = np.clip(image, 1.0, None)
    # masked pixels (NaN: saturated, interpolated, cosmic rays) are left out
    chi2_bliss = [
        float(np.nanmean((((image - sky - r.numpy()) ** 2) / variance)[inner])) for r in rendered
    ]
    phot_model = render_stars([phot_all[0]], [phot_all[1][:, None]], psf[None], (height, width))
    phot_model = phot_model[0, 0].numpy()
    chi2_phot = float(np.nanmean((((image - sky - phot_model) ** 2) / variance)[inner]))

    area = float((height - 2 * m) * (width - 2 * m))
    around_bright = {}
    for name, (plocs, electrons) in {
        "bliss": (bliss_plocs, bliss_e),
        "photutils": (phot_plocs, phot_e),
    }.items():
        n, mean, expected = neighbours_of_bright(plocs, mag(electrons), area)
        around_bright[name] = {"n_r_lt_17_5": n, "neighbours": mean, "expected": expected}

    cores = saturated_cores(field.saturated[band][rows, cols][inner]) + m
    r22 = bliss_plocs[mag(bliss_e) < 22]
    r15 = bliss_plocs[mag(bliss_e) < 15]
    near_core = [int((np.hypot(*(r22 - c).T) < SATURATED_RADIUS_PX).sum()) for c in cores]
    bright_core = [bool((np.hypot(*(r15 - c).T) < 3.0).any()) for c in cores]
    whole = bright_star_score(phot_plocs, mag(phot_e), bliss_plocs, mag(bliss_e), 15.0)
    result = {
        "region_rows": args.rows,
        "region_cols": args.cols,
        "checkpoint": str(args.checkpoint),
        "catalog": args.catalog,
        "masked_share": masked,
        "bliss_r_lt_22": int((mag(bliss_e) < 22).sum()),
        "photutils_r_lt_22": int((mag(phot_e) < 22).sum()),
        "photutils_r_lt_20": int(bright.sum()),
        "share_of_photutils_r_lt_20_found_by_bliss": found_share,
        "sample_counts_r_lt_22": [int((mag(e) < 22).sum()) for _, e in sample_cats],
        "chi2_per_pixel_bliss_samples": chi2_bliss,
        "chi2_per_pixel_photutils": chi2_phot,
        "r_lt_22_within_2_5px_of_r_lt_17_5": around_bright,
        "photutils_r_lt_15": whole.n,
        "share_of_photutils_r_lt_15_found_whole_by_bliss": whole.found_share,
        "saturated_cores": len(cores),
        "bliss_r_lt_22_within_5px_of_a_saturated_core": float(np.mean(near_core))
        if len(cores)
        else None,
        "expected_r_lt_22_within_5px": len(r22) / area * np.pi * SATURATED_RADIUS_PX**2,
        "saturated_cores_with_a_bliss_r_lt_15_within_3px": int(sum(bright_core)),
    }
    (out / "m2_core.json").write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: v for k, v in result.items() if k != "chi2_per_pixel_bliss_samples"}
            | {"chi2_bliss_median": float(np.median(chi2_bliss))},
            indent=2,
        )
    )
    _plot(
        image[inner],
        sky[inner],
        bliss_plocs - m,
        mag(bliss_e),
        phot_plocs - m,
        mag(phot_e),
        out / "m2_core.png",
        args,
    )


def _plot(image, sky, bliss_plocs, bliss_mag, phot_plocs, phot_mag, path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6))
    stretched = np.arcsinh((image - sky) / (3 * np.sqrt(np.nanmedian(sky))))
    low, high = np.nanpercentile(stretched, [1, 99.5])
    extent = (args.cols[0] - 0.5, args.cols[1] - 0.5, args.rows[0] - 0.5, args.rows[1] - 0.5)
    panels = [
        ("image", None, None, None),
        ("BLISS crowded K = 4", bliss_plocs, bliss_mag, "tab:red"),
        ("photutils IterativePSFPhotometry", phot_plocs, phot_mag, "tab:cyan"),
    ]
    for ax, (name, plocs, mags, colour) in zip(axes, panels, strict=True):
        ax.imshow(stretched, origin="lower", cmap="gray_r", vmin=low, vmax=high, extent=extent)
        ax.set_xlabel("column (px)")
        ax.set_ylabel("row (px)")
        if plocs is None:
            ax.set_title("M2, SDSS 2583-2-136, r band (asinh stretch)", fontsize=9)
            continue
        keep = mags < 22
        ax.scatter(
            plocs[keep, 1] - 0.5 + args.cols[0],
            plocs[keep, 0] - 0.5 + args.rows[0],
            s=3,
            marker="o",
            c=colour,
            lw=0,
        )
        ax.set_title(f"{name}: {int(keep.sum())} stars with r < 22", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
