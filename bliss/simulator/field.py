"""Write simulated fields in the FITS input contract of ``bliss mode=predict``, with their truth."""

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from bliss.atomic import atomic_path
from bliss.catalog.io import catalog_to_table
from bliss.simulator.simulate import ImageSimulator

__all__ = ["simple_wcs", "write_simulated_field"]


def simple_wcs(
    height_px: int,
    width_px: int,
    pixel_scale_arcsec: float,
    center_deg: tuple[float, float] = (150.0, 2.0),
) -> WCS:
    """A north-up TAN WCS centred on ``center_deg`` (RA, Dec)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(center_deg)
    wcs.wcs.crpix = [(width_px + 1) / 2, (height_px + 1) / 2]
    scale = pixel_scale_arcsec / 3600
    wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    return wcs


def write_simulated_field(
    simulator: ImageSimulator,
    seed: int,
    image_path: str | Path,
    truth_path: str | Path,
    *,
    compress: bool = False,
    write_background: bool = False,
) -> dict:
    """Simulate one field and write it as a predict input FITS plus a truth table.

    The image file has one HDU per band (``EXTNAME`` = band, electrons with sky, ``MAGZERO``,
    ``PSF_FWHM``, ``PSF_BETA``, the PSF's shape ``PSF_E1``, ``PSF_E2``, ``PSF_RHO4``, a TAN
    WCS); with ``write_background`` also ``<band>_BKG`` HDUs,
    and where the conditions vary the PSF within the image (``fwhm_gradient``) a ``<band>_FWHM``
    map HDU, with ``PSF_FWHM`` its median.
    ``compress`` stores the (integer Poisson) counts losslessly with RICE compression.

    Returns:
        The simulated batch (``images``, ``catalog``, conditions).
    """
    batch = simulator.simulate(1, seed=seed)
    survey = simulator.survey
    size = simulator.image_size
    wcs = simple_wcs(size, size, survey.pixel_scale_arcsec)
    header = wcs.to_header()
    hdus = [fits.PrimaryHDU()]
    fwhm = batch["psf_fwhm_arcsec"][0]  # c, or c h w where the PSF varies over the image
    typical = fwhm if fwhm.ndim == 1 else fwhm.flatten(1).median(dim=1).values
    for b, band in enumerate(survey.bands):
        card = header.copy()
        card["MAGZERO"] = (survey.magzero(band), "AB mag of one electron")
        card["PSF_FWHM"] = (float(typical[b]), "Moffat FWHM, arcsec")
        card["PSF_BETA"] = (survey.psf_beta, "Moffat beta")
        for name, value in zip(
            ("PSF_E1", "PSF_E2", "PSF_RHO4"), batch["psf_shape"][0, b], strict=True
        ):
            card[name] = (round(float(value), 5), "PSF adaptive moments (bliss psf_shape)")
        card["BUNIT"] = "electron"
        data = batch["images"][0, b].numpy()
        if compress:
            hdus.append(
                fits.CompImageHDU(
                    np.round(data).astype(np.int32),
                    header=card,
                    name=band,
                    compression_type="RICE_1",
                )
            )
        else:
            hdus.append(fits.ImageHDU(data, header=card, name=band))
        if write_background:
            sky = np.full((size, size), float(batch["background"][0, b]), dtype=np.float32)
            hdus.append(fits.ImageHDU(sky, name=f"{band}_BKG"))
        if fwhm.ndim == 3:
            hdus.append(fits.ImageHDU(fwhm[b].numpy().astype(np.float32), name=f"{band}_FWHM"))
    image_path, truth_path = Path(image_path), Path(truth_path)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(image_path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    truth = catalog_to_table(batch["catalog"].to_full_catalog(), survey.bands, wcs=wcs)
    truth.meta["SEED"] = seed
    truth.meta["PSF_FWHM"] = ",".join(f"{v:.3f}" for v in typical.tolist())
    truth.meta["SKY"] = ",".join(f"{v:.1f}" for v in batch["background"][0].tolist())
    for key, value in batch.items():  # image-level truths of a lensed field: SHEAR1, SHEAR2, ...
        if key.startswith("fields/") and value.shape[1:3] == (1, 1):
            name = key.removeprefix("fields/")[:6].upper()
            for component, number in enumerate(value[0, 0, 0].tolist(), start=1):
                truth.meta[f"{name}{component}"] = float(number)
    with atomic_path(truth_path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*native FITS format.*"
        )  # nmgy round-trips through astropy metadata
        truth.write(tmp, format="fits", overwrite=True)
    return batch
