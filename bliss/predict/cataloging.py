"""One image in, its catalog files out: the catalog, the posterior samples and the PNG."""

from pathlib import Path
from typing import Any

from bliss.catalog.io import catalog_to_table, plocs_to_xy, stack_samples, write_table
from bliss.predict.plots import plot_detections
from bliss.predict.predictor import Predictor
from bliss.protocols import ImageSource, Survey

__all__ = ["predict_file"]


def predict_file(
    predictor: Predictor,
    survey: Survey,
    input_path: str | Path | None,
    output: str | Path,
    *,
    threshold: float,
    n_samples: int,
    plot: bool,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Catalog one image and write ``output``, ``<stem>_samples<suffix>`` and ``<stem>.png``.

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

    Returns:
        ``table`` (the catalog), ``catalog`` (its :class:`~bliss.catalog.FullCatalog`),
        ``samples`` (sample catalogs) and ``written`` (kind -> path).
    """
    output = Path(output)
    bands = tuple(predictor.encoder.bands)
    if isinstance(survey, ImageSource):
        image = survey.load_image(bands)
        input_path = image.path
    else:
        image = survey.read_image(input_path, bands)
    catalog, samples = predictor.predict_and_sample(image, threshold, n_samples)
    meta = {**meta, "INPUT": str(input_path), "NSOURCES": int(catalog["n_sources"][0])}
    if predictor.applies_aperture_correction(image):  # record what scaled the fluxes
        for band, factor in zip(image.bands, image.aperture_correction, strict=True):
            meta[f"APCOR_{band.upper()}"] = round(float(factor), 5)
    table = catalog_to_table(catalog, image.bands, wcs=image.wcs, meta=meta)
    written = {"catalog": write_table(table, output)}
    if n_samples:
        tables = [
            catalog_to_table(s, image.bands, wcs=image.wcs, meta=meta, interval=(0, 0))
            for s in samples
        ]
        written["samples"] = write_table(
            stack_samples(tables), output.with_name(f"{output.stem}_samples{output.suffix}")
        )
    if plot:
        ref = image.bands.index(survey.reference_band)
        x, y = plocs_to_xy(catalog["plocs"][0].numpy())
        detections = {"x": x, "y": y}
        if "prob_galaxy" in table.colnames:
            detections["prob_galaxy"] = table["prob_galaxy"]
        written["plot"] = plot_detections(
            image.images[ref],
            image.background[ref],
            output.with_suffix(".png"),
            detections,
            title=f"{Path(input_path).name}: {len(table)} sources",
        )
    return {"table": table, "catalog": catalog, "samples": samples, "written": written}
