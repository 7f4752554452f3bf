"""Check images of a catalog: the model image, the residual and the background, per band.

The model image is the catalog rendered by the simulator's GalSim renderer
(:class:`bliss.simulator.GalsimRenderer`, the forward model the network was trained to invert)
with a Moffat PSF of the image's FWHM per band (the median of a FWHM map) and the survey's beta,
plus the sky the network saw. Stars are point sources; sources with ``prob_galaxy >= 0.5`` are
bulge + disk galaxies with the catalog's shapes. Fluxes are the catalog's (posterior medians, on
the image's zero point). The residual ``image - model`` should look like noise: structure in it
shows missed sources, spurious ones, and wrong fluxes or shapes. This is the one predict module
that imports the simulator (an arrow in ``architecture.toml``).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from bliss.atomic import atomic_path
from bliss.catalog import GALAXY_KEYS, FullCatalog
from bliss.catalog.convert import nmgy_per_electron
from bliss.protocols import SurveyImage

__all__ = ["chi2_per_pixel", "render_model", "write_check_images"]


def render_model(
    catalog: FullCatalog, image: SurveyImage, *, pixel_scale_arcsec: float, psf_beta: float
) -> np.ndarray:
    """The sources of a one-image catalog rendered on the image's grid, without sky.

    Args:
        catalog: a one-image catalog of :meth:`bliss.predict.Predictor.predict` (``plocs``,
            ``fluxes`` in the image's nanomaggies, ``prob_galaxy`` or ``source_type``, and the
            galaxy shape keys).
        image: the image it catalogs (its zero points, PSF widths and shape).
        pixel_scale_arcsec: pixel side, arcsec.
        psf_beta: Moffat beta of the PSF.

    Returns:
        Electrons per pixel, sky-free. Shape ``c h w``.
    """
    from bliss.simulator.render import GalsimRenderer, moffat_psf

    n = int(catalog["n_sources"][0])
    plocs = catalog["plocs"][0, :n].double().numpy()
    per_electron = np.array([nmgy_per_electron(float(m)) for m in image.magzero])
    electrons = catalog["fluxes"][0, :n].double().numpy() / per_electron
    if "prob_galaxy" in catalog:
        is_galaxy = catalog["prob_galaxy"][0, :n, 0].numpy() >= 0.5
    elif "source_type" in catalog:
        is_galaxy = catalog["source_type"][0, :n, 0].numpy() >= 0.5
    else:
        is_galaxy = np.zeros(n, dtype=bool)
    if all(key in catalog for key in GALAXY_KEYS):
        shapes = np.concatenate(
            [catalog[key][0, :n].double().numpy() for key in GALAXY_KEYS], axis=-1
        )
        shapes[~is_galaxy] = 0.0  # a star's shape is not drawn (and may be NaN, as in tables)
    else:  # a model without shape factors: every source is drawn as a point source
        shapes, is_galaxy = np.zeros((n, len(GALAXY_KEYS))), np.zeros(n, dtype=bool)
    fwhm = (
        image.psf_fwhm_arcsec
        if image.psf_fwhm_map is None
        else np.median(image.psf_fwhm_map.reshape(len(image.bands), -1), axis=1)
    )
    return GalsimRenderer().render(
        plocs=plocs,
        flux_electrons=np.clip(electrons, 0, None),
        is_galaxy=is_galaxy,
        galaxy_params=shapes,
        psfs=[moffat_psf(float(f), psf_beta) for f in fwhm],
        image_shape=image.images.shape[1:],
        pixel_scale_arcsec=pixel_scale_arcsec,
    )


#: median of a chi-squared variable with one degree of freedom
_CHI2_1_MEDIAN = 0.454936


def chi2_per_pixel(image: np.ndarray, model: np.ndarray, *, robust: bool = False) -> float:
    """Mean of ``(image - model)**2 / model`` over the finite pixels: about 1 for a good model.

    ``model`` includes the sky, so it is the Poisson variance of each pixel in electrons.

    Args:
        image: electrons, sky included (NaN pixels are left out).
        model: the model image, electrons, sky included.
        robust: the median instead, divided by 0.455 (the median of chi^2 with one degree of
            freedom), so that noise still gives 1 while a few pixels (a saturated star, an
            unmasked cosmic ray) no longer dominate, as they do the mean on real frames.

    Shapes:
        ``h w`` (or any shape, the same for both).
    """
    finite = np.isfinite(image) & (model > 0)
    if not finite.any():
        return float("nan")
    chi2 = (image[finite] - model[finite]) ** 2 / model[finite]
    return float(np.median(chi2) / _CHI2_1_MEDIAN if robust else np.mean(chi2))


def write_check_images(
    catalog: FullCatalog,
    image: SurveyImage,
    path: str | Path,
    *,
    pixel_scale_arcsec: float,
    psf_beta: float,
    meta: Mapping[str, Any] | None = None,
    png: str | Path | None = None,
    band: str | None = None,
    title: str = "",
) -> dict[str, Any]:
    """Write the check images of a catalog (and optionally a PNG of one band).

    The FITS file has, per band, ``<BAND>_MODEL`` (the catalog rendered, plus the sky),
    ``<BAND>_RESID`` (image - model, NaN where the image is) and ``<BAND>_BKG`` (the sky), in
    electrons, with the image's WCS, ``MAGZERO`` and ``PSF_FWHM``; the primary header holds
    ``meta``, ``CHI2_<BAND>`` and ``CHI2R_<BAND>`` (:func:`chi2_per_pixel`, mean and robust).

    Args:
        catalog: the one-image catalog.
        image: the image it catalogs.
        path: the FITS file to write (atomically).
        pixel_scale_arcsec: pixel side, arcsec.
        psf_beta: Moffat beta of the PSF.
        meta: header keys for the primary HDU (e.g. the catalog's provenance).
        png: a PNG with the image, the model and the residual of ``band``, or None.
        band: the band of the PNG [default: the first].
        title: the PNG's title.

    Returns:
        ``path``, ``png`` (or None), ``chi2`` and ``chi2_robust`` (band -> chi^2 per pixel)
        and ``model`` (``c h w``, electrons, sky included).
    """
    model = render_model(
        catalog, image, pixel_scale_arcsec=pixel_scale_arcsec, psf_beta=psf_beta
    ) + np.broadcast_to(image.background, image.images.shape)
    residual = image.images - model
    chi2 = {b: chi2_per_pixel(image.images[i], model[i]) for i, b in enumerate(image.bands)}
    robust = {
        b: chi2_per_pixel(image.images[i], model[i], robust=True) for i, b in enumerate(image.bands)
    }
    primary = fits.PrimaryHDU()
    for key, value in (meta or {}).items():
        primary.header[key] = value
    primary.header["NSOURCES"] = int(catalog["n_sources"][0])
    for b, value in chi2.items():
        primary.header[f"CHI2_{b.upper()}"] = (round(value, 4), "mean (image - model)^2 / model")
        primary.header[f"CHI2R_{b.upper()}"] = (round(robust[b], 4), "median of it / 0.455")
    hdus = [primary]
    base = image.wcs.to_header() if image.wcs is not None else fits.Header()
    for index, name in enumerate(image.bands):
        header = base.copy()
        header["BUNIT"] = "electron"
        header["MAGZERO"] = (float(image.magzero[index]), "AB mag of one electron")
        header["PSF_FWHM"] = (float(image.psf_fwhm_arcsec[index]), "Moffat FWHM, arcsec")
        planes = (
            ("MODEL", model[index], "catalog rendered with a Moffat PSF, plus the sky"),
            ("RESID", residual[index], "image - model"),
            ("BKG", np.broadcast_to(image.background[index], model.shape[1:]), "sky"),
        )
        for suffix, data, comment in planes:
            plane = fits.ImageHDU(
                np.asarray(data, np.float32), header=header.copy(), name=f"{name.upper()}_{suffix}"
            )
            plane.header["COMMENT"] = comment
            hdus.append(plane)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    result: dict[str, Any] = {
        "path": Path(path),
        "png": None,
        "chi2": chi2,
        "chi2_robust": robust,
        "model": model,
    }
    if png is not None:
        index = image.bands.index(band) if band is not None else 0
        result["png"] = _plot_check(image, model, index, png, title, robust[image.bands[index]])
    return result


def _plot_check(
    image: SurveyImage, model: np.ndarray, index: int, path: str | Path, title: str, chi2: float
) -> Path:
    """Image, model and (image - model) / sqrt(model) of one band, side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from bliss.predict.plots import STRETCH, save_png, stretch_image

    band = image.bands[index]
    background = image.background[index]
    shown, top = stretch_image(image.images[index], background)
    rendered, _ = stretch_image(model[index], background)
    pull = (image.images[index] - model[index]) / np.sqrt(np.clip(model[index], 1e-3, None))
    h, w = shown.shape
    panel = 4.2 * min(1.0, max(h, w) / 800) + 2.3
    figure = Figure(figsize=(3 * panel * w / max(h, w) + 1.5, panel * h / max(h, w) + 1.0))
    FigureCanvasAgg(figure)
    extent = (-0.5, w - 0.5, -0.5, h - 0.5)
    panels = (
        ("image", shown, "gray_r", (-1, top)),
        ("model (catalog rendered + sky)", rendered, "gray_r", (-1, top)),
        (f"(image - model) / sqrt(model); robust chi2/pixel {chi2:.2f}", pull, "RdBu_r", (-5, 5)),
    )
    for column, (name, data, cmap, (low, high)) in enumerate(panels):
        axes = figure.add_subplot(1, 3, column + 1)
        shown_image = axes.imshow(
            np.nan_to_num(data),
            origin="lower",
            extent=extent,
            cmap=cmap,
            vmin=low,
            vmax=high,
            interpolation="nearest",
        )
        axes.set_title(name, fontsize=8)
        axes.set_xlabel("x (pixel, 0-indexed)", fontsize=8)
        axes.tick_params(labelsize=7)
        if column == 0:
            axes.set_ylabel("y (pixel, 0-indexed)", fontsize=8)
        if column == 2:
            figure.colorbar(shown_image, ax=axes, fraction=0.046, pad=0.02)
    figure.suptitle(f"{title}\n{band} band; image and model: stretch {STRETCH}", fontsize=9)
    return save_png(figure, path)
