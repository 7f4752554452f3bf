"""One image in, its catalog files out: catalog, region file, samples, PNG and check images."""

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bliss.catalog import FullCatalog
from bliss.catalog.columns import ERROR_QUANTILES
from bliss.catalog.convert import nmgy_to_mag
from bliss.catalog.flags import source_flags
from bliss.catalog.io import catalog_to_table, plocs_to_xy, stack_samples, write_table
from bliss.catalog.regions import write_regions
from bliss.errors import BlissValueError
from bliss.metrics.matching import match_catalogs
from bliss.predict.plots import plot_detections
from bliss.predict.predictor import Predictor
from bliss.predict.region_quantities import write_region_quantities
from bliss.predict.regional import CROWDED_KEY, RegionalPredictor
from bliss.protocols import ImageSource, Survey, SurveyImage

__all__ = ["input_label", "marginal_prob_source", "predict_file"]

#: a sample's source within this distance of a reported one counts as that source, pixels
MARGINAL_MATCH_PX = 1.0

#: the posterior quantiles each catalog asks for: the 90 % flux interval and the error quantiles
_QUANTILES = (0.05, 0.95, *ERROR_QUANTILES)
#: DS9 circle radius, in PSF FWHMs of the reference band
_REGION_FWHM = 1.5


def predict_file(
    predictor: Predictor | RegionalPredictor,
    survey: Survey,
    input_path: str | Path | None,
    output: str | Path,
    *,
    threshold: float,
    n_samples: int,
    plot: bool,
    meta: dict[str, Any],
    sky: str = "included",
    check_images: bool = False,
    marginal_samples: int = 0,
) -> dict[str, Any]:
    """Catalog one image and write its files next to ``output``.

    Writes ``output`` (the catalog), ``<stem>.reg`` (a DS9 region file), ``<stem>_regions.fits``
    for a model with region factors (a shear per image, a convergence map:
    :mod:`bliss.predict.region_quantities`), and on request
    ``<stem>_samples<suffix>``, ``<stem>.png`` and ``<stem>_check.fits`` / ``<stem>_check.png``
    (model, residual and background; :mod:`bliss.predict.check_images`).

    Args:
        predictor: the predictor of the model.
        survey: reads the image: ``input_path`` in the FITS input contract, or, for an
            :class:`~bliss.protocols.ImageSource` (e.g. ``survey=sdss_frames``), its own image.
        input_path: the FITS file (ignored by an image source).
        output: the catalog file; its extension picks the format.
        threshold: report sources with ``P(source) > threshold``.
        n_samples: joint posterior sample catalogs to write as well (0: none).
        plot: write a PNG of the reference band with the detections.
        meta: provenance recorded in the catalogs (see :func:`bliss.predict.provenance.table_meta`).
        sky: ``"included"`` or ``"subtracted"``: whether the input's pixels hold the sky
            (``predict.sky``; an image source reads its own convention).
        check_images: also write the model and residual images (``predict.check_images``).
        marginal_samples: estimate ``prob_source_marginal`` from this many joint samples
            (:func:`marginal_prob_source`; 0: not reported).

    Returns:
        ``table`` (the catalog), ``catalog`` (its :class:`~bliss.catalog.FullCatalog`),
        ``samples`` (sample catalogs), ``image`` (the :class:`~bliss.protocols.SurveyImage`
        read), ``regions`` (name -> :class:`~bliss.predict.region_quantities.RegionEstimate`) and
        ``written`` (kind -> path).
    """
    output = Path(output)
    bands = tuple(predictor.encoder.bands)
    if isinstance(survey, ImageSource):
        image = survey.load_image(bands)
        input_path = image.path
    else:
        image = survey.read_image(input_path, bands, sky=sky)
        meta = {**meta, "SKYCONV": sky}
    drawn = max(n_samples, marginal_samples)
    catalog, samples, regions = predictor.predict_with_regions(image, threshold, drawn, _QUANTILES)
    if marginal_samples:
        marginal = marginal_prob_source(catalog, samples[:marginal_samples])
        catalog = FullCatalog(
            catalog.height_px,
            catalog.width_px,
            {**dict(catalog.items()), "prob_source_marginal": marginal},
        )
    samples = samples[:n_samples]
    crowded = None
    if isinstance(predictor, RegionalPredictor):  # record which model cataloged what
        crowded = catalog[CROWDED_KEY][0, :, 0].numpy() > 0.5
        catalog = _without(catalog, CROWDED_KEY)
        picks = predictor.picks
        meta = {
            **meta,
            "CRWDCKPT": predictor.crowded_checkpoint,
            "CRWDBLKS": picks["crowded_blocks"],
            "CRWDBLPX": picks["block_px"],
            "CRWDAREA": round(picks["crowded_share"], 4),
            "NCROWDED": int(crowded.sum()),
        }
    shift = getattr(predictor, "density_shift", None)
    if shift is not None:  # how far the count prior was moved towards the field's density
        summary = shift.summary()
        meta = {
            **meta,
            "DENSMAX": round(summary["max_ratio"], 3),
            "DENSAREA": round(summary["moved_share"], 4),
        }
        if "min_galaxy_fraction" in summary:  # and the source-type prior, to its galaxy share
            meta["DENSGALF"] = round(summary["min_galaxy_fraction"], 4)
    meta = {**meta, "INPUT": str(input_path), "NSOURCES": int(catalog["n_sources"][0])}
    if predictor.applies_aperture_correction(image):  # record what scaled the fluxes
        for band, factor in zip(image.bands, image.aperture_correction, strict=True):
            meta[f"APCOR_{band.upper()}"] = round(float(factor), 5)
    ref = image.bands.index(survey.reference_band)
    fwhm_px = _fwhm_px(image, ref, survey.pixel_scale_arcsec)
    n = int(catalog["n_sources"][0])
    flags = source_flags(
        catalog["plocs"][0, :n].double().numpy(),
        ~np.isfinite(image.images).all(axis=0),
        fwhm_px,
        ref_mag=np.asarray(nmgy_to_mag(catalog["fluxes"][0, :n, ref].double())),
        prob_source=catalog["prob_source"][0, :n, 0].numpy() if "prob_source" in catalog else None,
        crowded=crowded,
        saturated=None if image.saturated is None else image.saturated.any(axis=0),
    )
    table = catalog_to_table(catalog, image.bands, wcs=image.wcs, meta=meta, flags=flags)
    label = input_label(input_path)
    written = {"catalog": write_table(table, output)}
    if regions:
        written["region_quantities"] = write_region_quantities(
            regions, output.with_name(f"{output.stem}_regions.fits"), meta
        )
    written["regions"] = write_regions(
        table,
        output.with_suffix(".reg"),
        radius_px=_REGION_FWHM * fwhm_px,
        pixel_scale_arcsec=survey.pixel_scale_arcsec if image.wcs is not None else None,
        title=f"bliss catalog {output.name} of {label}",
    )
    if n_samples:
        tables = [
            catalog_to_table(s, image.bands, wcs=image.wcs, meta=meta, interval=(0, 0))
            for s in samples
        ]
        written["samples"] = write_table(
            stack_samples(tables), output.with_name(f"{output.stem}_samples{output.suffix}")
        )
    band = image.bands[ref]
    if plot:
        x, y = plocs_to_xy(catalog["plocs"][0, :n].numpy())
        detections = {"x": x, "y": y, "flux": catalog["fluxes"][0, :n, ref].numpy()}
        if "prob_galaxy" in table.colnames:
            detections["prob_galaxy"] = np.asarray(table["prob_galaxy"])
        written["plot"] = plot_detections(
            image.images[ref],
            image.background[ref],
            output.with_suffix(".png"),
            detections,
            title=f"{label}: {n} bliss sources (P(source) > {threshold:g})",
            band=band,
        )
    if check_images:
        from bliss.predict.check_images import write_check_images

        check = write_check_images(
            catalog,
            image,
            output.with_name(f"{output.stem}_check.fits"),
            pixel_scale_arcsec=survey.pixel_scale_arcsec,
            psf_beta=survey.psf_beta,
            meta={k: v for k, v in meta.items() if k in ("INPUT", "CKPT", "BLISSVER", "SKYCONV")},
            png=output.with_name(f"{output.stem}_check.png") if plot else None,
            band=band,
            title=f"{label}: {n} bliss sources",
        )
        written["check_images"] = check["path"]
        if check["png"] is not None:
            written["check_plot"] = check["png"]
    return {
        "table": table,
        "catalog": catalog,
        "samples": samples,
        "image": image,
        "regions": regions,
        "written": written,
    }


def marginal_prob_source(catalog: FullCatalog, samples: list[FullCatalog]) -> torch.Tensor:
    """Per reported source, the share of joint samples holding it (matched one-to-one within 1 px).

    The point estimate's ``prob_source`` is conditional on the detections of the earlier
    checkerboard groups, hence on the threshold; this is the source's marginal probability under
    the joint posterior, estimated from ``samples`` (standard error at most
    ``0.5 / sqrt(len(samples))``).

    Returns:
        Shape ``1 n 1`` (float32).

    Raises:
        BlissValueError: ``samples`` is empty.
    """
    if not samples:
        raise BlissValueError("marginal_prob_source needs at least one joint sample.")
    n = int(catalog["n_sources"][0])
    plocs = catalog["plocs"][0, :n].double()
    hits = torch.zeros(n, dtype=torch.float64)
    for sample in samples:
        drawn = sample["plocs"][0, : int(sample["n_sources"][0])].double()
        found, _ = match_catalogs(plocs, drawn, max_dist_px=MARGINAL_MATCH_PX)
        hits[found] += 1
    return (hits / len(samples)).float().view(1, n, 1)


def _without(catalog: FullCatalog, key: str) -> FullCatalog:
    return FullCatalog(
        catalog.height_px, catalog.width_px, {k: v for k, v in catalog.items() if k != key}
    )


def input_label(path: str | Path | None) -> str:
    """How plots name an input: a file's name, or the last parts of a folder (an SDSS field).

    ``data/f.fits`` -> ``f.fits``; ``sdss/94/1/12`` (a field folder) -> ``sdss/94/1/12``.
    """
    if path is None:
        return "image"
    path = Path(path)
    if path.is_dir():
        return "/".join(path.parts[-4:])
    return path.name


def _fwhm_px(image: SurveyImage, band: int, pixel_scale_arcsec: float) -> float:
    """The PSF FWHM of one band in pixels (the median of a FWHM map)."""
    fwhm = (
        float(image.psf_fwhm_arcsec[band])
        if image.psf_fwhm_map is None
        else float(np.median(image.psf_fwhm_map[band]))
    )
    return fwhm / pixel_scale_arcsec
