"""Region quantities of a prediction (a shear per image, a convergence map): estimates and files.

A model with region factors (``encoder.regions``) gives, besides its catalog, one posterior per
image or per coarse tile of ``region_px``. :func:`region_estimates` turns them into medians and
quantiles; :func:`write_region_quantities` writes one FITS table per quantity (``<stem>_regions.fits``),
a row per region with its pixel bounds, so the map is read back with astropy, TOPCAT or pandas.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from torch import Tensor

from bliss.atomic import atomic_path
from bliss.posterior.regions import RegionFactor, region_grid

__all__ = ["RegionEstimate", "region_estimates", "region_table", "write_region_quantities"]


@dataclass(frozen=True)
class RegionEstimate:
    """The posterior summary of one region quantity over one image.

    Attributes:
        key: the quantity (``shear``, ``convergence_map``, ...).
        region_px: side of a region in pixels (the padded image for an image-level quantity).
        median: posterior median of every region. Shape ``hr wr d``.
        quantiles: ``q -> hr wr d`` posterior quantiles.
    """

    key: str
    region_px: tuple[int, int]
    median: np.ndarray
    quantiles: dict[float, np.ndarray]


def region_estimates(
    regions: Mapping[str, RegionFactor],
    params: Mapping[str, Tensor],
    tile_slen: int,
    image_shape: tuple[int, int],
    quantiles: Sequence[float] = (0.05, 0.95),
) -> dict[str, RegionEstimate]:
    """Medians and quantiles of every region factor of one image.

    Args:
        regions: the encoder's region factors, by name.
        params: their raw parameters for the image (``1 hr wr p``), by name.
        tile_slen: the model's tile side, px.
        image_shape: ``(h, w)`` of the (tile-padded) image the features cover, px.
        quantiles: levels to report.

    Raises:
        BlissValueError: a region does not divide the image.
    """
    out = {}
    for name, region in regions.items():
        n_rows, n_cols = region_grid(region, tile_slen, *image_shape)
        first = params[name][0:1]
        size = (image_shape[0] // n_rows, image_shape[1] // n_cols)
        out[name] = RegionEstimate(
            key=region.key,
            region_px=size,
            median=region.point_estimate(first)[0].double().cpu().numpy(),
            quantiles={q: region.quantile(first, q)[0].double().cpu().numpy() for q in quantiles},
        )
    return out


def region_table(estimate: RegionEstimate) -> Table:
    """One row per region: its pixel bounds (rows ``[row_min, row_max)``, ...), median and quantiles."""
    n_rows, n_cols, dim = estimate.median.shape
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    height, width = estimate.region_px
    table = Table()
    table["region_row"], table["region_col"] = rows.ravel(), cols.ravel()
    table["row_min"], table["col_min"] = rows.ravel() * height, cols.ravel() * width
    table["row_max"], table["col_max"] = table["row_min"] + height, table["col_min"] + width
    table[estimate.key] = estimate.median.reshape(-1, dim)
    for q, values in estimate.quantiles.items():
        table[f"{estimate.key}@{q:g}"] = values.reshape(-1, dim)
    return table


def write_region_quantities(
    estimates: Mapping[str, RegionEstimate], path: str | Path, meta: Mapping[str, Any]
) -> Path:
    """Write each quantity's :func:`region_table` as a FITS table HDU named after it (atomic).

    ``meta`` (provenance: input, checkpoint, config) goes into the primary header.
    """
    path = Path(path)
    primary = fits.PrimaryHDU()
    for key, value in meta.items():
        primary.header[str(key)[:8].upper()] = (
            value if isinstance(value, int | float | bool) else str(value)
        )
    hdus = [primary]
    for name, estimate in estimates.items():
        hdu = fits.table_to_hdu(region_table(estimate))
        hdu.name = name.upper()
        hdu.header["QUANTITY"] = (estimate.key, "the posterior factor's catalog key")
        hdus.append(hdu)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return path
