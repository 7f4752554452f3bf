"""Catalogs <-> astropy tables and files: the one place that converts.

Tables use the numpy pixel convention: ``x`` is the column and ``y`` the row, 0-indexed, with
pixel centres on integers, so ``x = col - 0.5`` and ``y = row - 0.5`` in terms of bliss's internal
``(row, col)`` (origin at the image corner, see :mod:`bliss.catalog`). :func:`plocs_to_xy` and
:func:`xy_to_plocs` are that convention; RA/Dec come from the image's WCS at ``(x, y)``.
"""

import datetime
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import torch
from astropy.table import QTable, Table, vstack
from astropy.wcs import WCS

from bliss.atomic import atomic_path
from bliss.catalog.convert import nmgy_to_mag
from bliss.catalog.full import FullCatalog
from bliss.errors import BlissConfigError, BlissValueError

__all__ = [
    "CATALOG_FORMATS",
    "PIXEL_CENTRE",
    "catalog_to_table",
    "plocs_to_xy",
    "stack_samples",
    "table_to_full_catalog",
    "write_table",
    "xy_to_plocs",
]

#: catalog format name -> (file extension, astropy ``format``); ``.fit`` is read as FITS too
CATALOG_FORMATS: dict[str, tuple[str, str]] = {
    "fits": (".fits", "fits"),
    "parquet": (".parquet", "parquet"),
    "ecsv": (".ecsv", "ascii.ecsv"),
    "csv": (".csv", "ascii.csv"),
}
_BY_SUFFIX = {suffix: fmt for suffix, fmt in CATALOG_FORMATS.values()} | {".fit": "fits"}
#: pixel centres of the internal convention sit at ``+ PIXEL_CENTRE`` from the table convention
PIXEL_CENTRE = 0.5
#: keys that are not written as their own column (positions and counts; fluxes get per-band ones)
_NOT_COLUMNS = {"plocs", "locs", "n_sources", "prob_source", "prob_galaxy", "fluxes", "source_type"}
_SHAPE_UNITS = {
    "disk_frac": u.dimensionless_unscaled,
    "beta_rad": u.rad,
    "disk_q": u.dimensionless_unscaled,
    "disk_hlr_arcsec": u.arcsec,
    "bulge_q": u.dimensionless_unscaled,
    "bulge_hlr_arcsec": u.arcsec,
}


def plocs_to_xy(plocs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Internal ``(row, col)`` positions (``... 2``) -> table ``(x, y)`` pixels."""
    plocs = np.asarray(plocs)
    return plocs[..., 1] - PIXEL_CENTRE, plocs[..., 0] - PIXEL_CENTRE


def xy_to_plocs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Table ``(x, y)`` pixels -> internal ``(row, col)`` positions. Shape ``... 2``."""
    return np.stack([np.asarray(y) + PIXEL_CENTRE, np.asarray(x) + PIXEL_CENTRE], axis=-1)


def catalog_to_table(
    catalog: FullCatalog,
    bands: Sequence[str],
    *,
    index: int = 0,
    wcs: WCS | None = None,
    meta: Mapping[str, Any] | None = None,
    interval: tuple[float, float] = (0.05, 0.95),
) -> QTable:
    """The sources of image ``index`` as the contract catalog: one row per source, with units.

    Columns, in order: ``x``, ``y`` (0-indexed pixels, pixel centres on integers), ``ra``, ``dec``
    (deg, with a WCS), ``prob_source`` and ``prob_galaxy`` (when the catalog has them),
    ``source_type`` (0 star, 1 galaxy; only without ``prob_galaxy``, e.g. a posterior sample or
    a truth catalog), per band ``flux_<band>`` (nmgy), ``flux_<band>_lo`` / ``_hi`` (the
    ``interval`` quantiles ``fluxes@<q>``, when present) and ``mag_<band>`` (AB), then one column
    per other catalog key (galaxy shapes with their units; quantile keys ``<key>@<q>`` are not
    written). ``meta`` keys should be FITS-safe (at most 8 upper-case characters).

    Shapes:
        every catalog key ``b n d``; a key with ``d = 1`` becomes a plain column.
    """
    n = int(catalog["n_sources"][index])
    columns = {
        key: value[index, :n].detach().cpu().numpy()
        for key, value in catalog.items()
        if key != "n_sources"
    }
    table = QTable()
    x, y = plocs_to_xy(columns["plocs"])
    table["x"] = x * u.pix
    table["y"] = y * u.pix
    if wcs is not None:
        ra, dec = wcs.pixel_to_world_values(x, y)
        table["ra"] = np.asarray(ra) * u.deg
        table["dec"] = np.asarray(dec) * u.deg
    for key in ("prob_source", "prob_galaxy"):
        if key in columns:
            table[key] = columns[key].reshape(-1).astype(np.float32)
    if "source_type" in columns and "prob_galaxy" not in columns:
        table["source_type"] = columns["source_type"].reshape(-1).round().astype(np.int16)
    low, high = interval
    for b, band in enumerate(bands):
        flux = columns["fluxes"][:, b]
        table[f"flux_{band}"] = flux * u.nmgy
        if f"fluxes@{low:g}" in columns:
            table[f"flux_{band}_lo"] = columns[f"fluxes@{low:g}"][:, b] * u.nmgy
            table[f"flux_{band}_hi"] = columns[f"fluxes@{high:g}"][:, b] * u.nmgy
        mag = nmgy_to_mag(torch.as_tensor(flux, dtype=torch.float64))
        table[f"mag_{band}"] = np.asarray(mag) * u.mag
    for key, value in columns.items():
        if key in _NOT_COLUMNS or "@" in key:
            continue
        unit = _SHAPE_UNITS.get(key, u.dimensionless_unscaled)
        table[key] = (value[:, 0] if value.ndim == 2 and value.shape[1] == 1 else value) * unit
    table.meta.update(meta or {})
    table.meta.setdefault("DATE", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    return table


def table_to_full_catalog(
    table: Table, bands: Sequence[str], height_px: int, width_px: int, name: str = "table"
) -> FullCatalog:
    """A one-image :class:`FullCatalog` from a table with ``x``, ``y`` and ``flux_<band>`` columns.

    ``source_type`` (0/1) is read from ``source_type``, or from ``prob_galaxy > 0.5`` when present.

    Raises:
        BlissValueError: a required column is missing (the message names ``name``).
    """
    missing = [c for c in ("x", "y", *(f"flux_{b}" for b in bands)) if c not in table.colnames]
    if missing:
        raise BlissValueError(
            f"{name} lacks columns {missing}; expected x, y and flux_<band> for {list(bands)}."
        )

    def column(key: str) -> np.ndarray:
        value = table[key]
        return np.asarray(getattr(value, "value", value), dtype=np.float64)

    plocs = xy_to_plocs(column("x"), column("y"))
    data = {
        "n_sources": torch.tensor([len(table)]),
        "plocs": torch.from_numpy(plocs).float().reshape(1, len(table), 2),
        "fluxes": torch.from_numpy(np.stack([column(f"flux_{b}") for b in bands], -1))
        .float()
        .reshape(1, len(table), len(bands)),
    }
    if "source_type" in table.colnames:
        data["source_type"] = torch.from_numpy(column("source_type")).float().view(1, -1, 1)
    elif "prob_galaxy" in table.colnames:
        data["source_type"] = torch.from_numpy(column("prob_galaxy") > 0.5).float().view(1, -1, 1)
    return FullCatalog(height_px, width_px, data)


def stack_samples(samples: list[QTable]) -> QTable:
    """Join sample catalogs with a ``sample`` column."""
    for index, table in enumerate(samples):
        table["sample"] = np.full(len(table), index, dtype=np.int32)
    return vstack(samples, metadata_conflicts="silent")


def write_table(table: QTable, path: str | Path) -> Path:
    """Write by extension to a temporary file, then rename.

    ``.fits`` and ``.parquet`` keep units and meta; ``.csv`` is plain comma-separated values
    (units in the column reference); ``.ecsv`` is CSV with a YAML header that keeps units and meta.

    Raises:
        BlissConfigError: the extension is not one of :data:`CATALOG_FORMATS`'s.
    """
    path = Path(path)
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise BlissConfigError(
            f"{path}: unknown extension {path.suffix!r}; use one of {sorted(_BY_SUFFIX)}."
        )
    out = QTable(table)
    out.meta = {k: str(v) for k, v in table.meta.items()}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # nmgy is not a FITS-standard unit; astropy keeps it in its own header metadata
        warnings.filterwarnings("ignore", message=".*native FITS format.*")
        out.write(tmp, format=fmt, overwrite=True)
    return path
