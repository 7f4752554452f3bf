"""Catalogs <-> astropy tables and files: the one place that converts.

Tables use the numpy pixel convention: ``x`` is the column and ``y`` the row, 0-indexed, with
pixel centres on integers, so ``x = col - 0.5`` and ``y = row - 0.5`` in terms of bliss's internal
``(row, col)`` (origin at the image corner, see :mod:`bliss.catalog`). :func:`plocs_to_xy` and
:func:`xy_to_plocs` are that convention; RA/Dec come from the image's WCS at ``(x, y)``.
"""

import datetime
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import torch
from astropy.io import fits
from astropy.table import QTable, Table, vstack
from astropy.wcs import WCS

from bliss.atomic import atomic_path
from bliss.catalog.columns import (
    ERROR_QUANTILES,
    NJY_PER_NMGY,
    column_description,
    flux_snr,
    half_width,
    mag_err,
)
from bliss.catalog.convert import nmgy_to_mag
from bliss.catalog.full import FullCatalog
from bliss.catalog.tile import GALAXY_KEYS
from bliss.errors import BlissConfigError, BlissIOError, BlissValueError

__all__ = [
    "CATALOG_FORMATS",
    "PIXEL_CENTRE",
    "catalog_to_table",
    "column_values",
    "plocs_to_xy",
    "read_table",
    "stack_samples",
    "table_format",
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
#: catalog key of the galaxies' ellipticity (e1, e2), written as columns ``e1`` and ``e2``
ELLIPTICITY_KEY = "ellipticity"
_NOT_COLUMNS = {
    "local_sky",  # bliss.predict.psf_photometry.LOCAL_SKY_KEY: how a flux was measured
    "plocs",
    "locs",
    "n_sources",
    "prob_source",
    "prob_source_marginal",
    "prob_galaxy",
    "fluxes",
    "source_type",
}
#: FITS column cards that astropy reads into meta and write_table writes itself
_COLUMN_KEYWORD = re.compile(r"^(TUNIT|TCOMM)\d+$", re.IGNORECASE)
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
    flags: np.ndarray | None = None,
) -> QTable:
    """The sources of image ``index`` as the contract catalog: one row per source, with units.

    Columns, in order (each is described in :data:`bliss.catalog.columns.COLUMNS`, which also
    gives every column's description, ``info.description``): ``id`` (1-based row number), ``x``,
    ``y`` (0-indexed pixels, pixel centres on integers), ``x_err``, ``y_err`` (when the catalog
    has the :data:`~bliss.catalog.columns.ERROR_QUANTILES` of ``plocs``), ``ra``, ``dec`` (deg,
    NaN without a WCS), ``prob_source`` and ``prob_galaxy`` (when the catalog has them),
    ``source_type`` (0 star, 1 galaxy; only without ``prob_galaxy``, e.g. a posterior sample or a
    truth catalog), ``flags`` (when given), per band ``flux_<band>`` (nmgy), ``flux_<band>_lo`` /
    ``_hi`` (the ``interval`` quantiles ``fluxes@<q>``, when present), ``flux_<band>_njy``,
    ``mag_<band>`` (AB), ``mag_<band>_err`` and ``snr_<band>`` (with the error quantiles of
    ``fluxes``), ``e1``, ``e2`` and their ``_lo`` / ``_hi`` quantiles for a catalog with an
    ``ellipticity`` key, then one column per other catalog key (galaxy shapes with their units, NaN for
    stars; quantile keys ``<key>@<q>`` are not written). ``meta`` keys should be FITS-safe (at
    most 8 upper-case characters).

    Args:
        catalog: the catalog.
        bands: band names, in the order of the last axis of ``fluxes``.
        index: which image of the batch.
        wcs: celestial WCS for ``ra`` / ``dec``, or None.
        meta: the table's meta (FITS header keys).
        interval: the quantiles written as ``flux_<band>_lo`` / ``_hi``.
        flags: bit masks (:func:`bliss.catalog.flags.source_flags`), or None: no ``flags``
            column. Shape ``n``.

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
    table["id"] = np.arange(1, n + 1, dtype=np.int32)
    x, y = plocs_to_xy(columns["plocs"])
    table["x"] = x * u.pix
    table["y"] = y * u.pix
    q_low, q_high = (f"@{q:g}" for q in ERROR_QUANTILES)
    if f"plocs{q_low}" in columns and f"plocs{q_high}" in columns:
        x_low, y_low = plocs_to_xy(columns[f"plocs{q_low}"])
        x_high, y_high = plocs_to_xy(columns[f"plocs{q_high}"])
        table["x_err"] = half_width(x_low, x_high).astype(np.float32) * u.pix
        table["y_err"] = half_width(y_low, y_high).astype(np.float32) * u.pix
    ra, dec = np.full(n, np.nan), np.full(n, np.nan)
    if wcs is not None and n:
        ra, dec = (np.asarray(v, dtype=np.float64) for v in wcs.pixel_to_world_values(x, y))
    table["ra"] = ra * u.deg
    table["dec"] = dec * u.deg
    for key in ("prob_source", "prob_source_marginal", "prob_galaxy"):
        if key in columns:
            table[key] = columns[key].reshape(-1).astype(np.float32)
    if "source_type" in columns and "prob_galaxy" not in columns:
        table["source_type"] = columns["source_type"].reshape(-1).round().astype(np.int16)
    if flags is not None:
        if np.shape(flags) != (n,):
            raise BlissValueError(f"flags has shape {np.shape(flags)}; expected ({n},).")
        table["flags"] = np.asarray(flags, dtype=np.int32)
    low, high = interval
    for b, band in enumerate(bands):
        flux = columns["fluxes"][:, b]
        table[f"flux_{band}"] = flux * u.nmgy
        if f"fluxes@{low:g}" in columns:
            table[f"flux_{band}_lo"] = columns[f"fluxes@{low:g}"][:, b] * u.nmgy
            table[f"flux_{band}_hi"] = columns[f"fluxes@{high:g}"][:, b] * u.nmgy
        table[f"flux_{band}_njy"] = (flux * np.float32(NJY_PER_NMGY)) * u.nJy
        mag = nmgy_to_mag(torch.as_tensor(flux, dtype=torch.float64))
        table[f"mag_{band}"] = np.asarray(mag) * u.mag
        if f"fluxes{q_low}" in columns and f"fluxes{q_high}" in columns:
            flux_low = columns[f"fluxes{q_low}"][:, b]
            flux_high = columns[f"fluxes{q_high}"][:, b]
            table[f"mag_{band}_err"] = mag_err(flux_low, flux_high).astype(np.float32) * u.mag
            table[f"snr_{band}"] = flux_snr(flux, flux_low, flux_high).astype(np.float32)
    galaxy = _is_galaxy(columns, n)
    for key, value in columns.items():
        if key in _NOT_COLUMNS or "@" in key:
            continue
        if key == ELLIPTICITY_KEY:  # spin-2 (e1, e2): a column per component, NaN for stars
            for component in range(2):
                name = f"e{component + 1}"
                table[name] = np.where(galaxy, value[:, component], np.nan).astype(np.float32)
                if f"{key}@{low:g}" in columns and f"{key}@{high:g}" in columns:
                    for suffix, q in (("lo", low), ("hi", high)):
                        bound = columns[f"{key}@{q:g}"][:, component]
                        table[f"{name}_{suffix}"] = np.where(galaxy, bound, np.nan).astype(
                            np.float32
                        )
            continue
        unit = _SHAPE_UNITS.get(key, u.dimensionless_unscaled)
        value = value[:, 0] if value.ndim == 2 and value.shape[1] == 1 else value
        if key in GALAXY_KEYS and value.ndim == 1:  # a star has no galaxy shape
            value = np.where(galaxy, value, np.nan).astype(value.dtype)
        table[key] = value * unit
    for name in table.colnames:
        table[name].info.description = (
            column_description(name) or f"catalog key {name} (point estimate)"
        )
    table.meta.update(meta or {})
    table.meta.setdefault("DATE", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    return table


def _is_galaxy(columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Which sources are galaxies: ``prob_galaxy >= 0.5``, else ``source_type``, else all."""
    if "prob_galaxy" in columns:
        return columns["prob_galaxy"].reshape(-1) >= 0.5
    if "source_type" in columns:
        return columns["source_type"].reshape(-1) >= 0.5
    return np.ones(n, dtype=bool)


def column_values(table: Table, name: str) -> np.ndarray:
    """A table column as float64 numbers, without its unit (a ``Quantity`` column's ``value``)."""
    column = table[name]
    return np.asarray(getattr(column, "value", column), dtype=np.float64)


def table_to_full_catalog(
    table: Table, bands: Sequence[str], height_px: int, width_px: int, name: str = "table"
) -> FullCatalog:
    """A one-image :class:`FullCatalog` from a table with ``x``, ``y`` and ``flux_<band>`` columns.

    ``source_type`` (0/1) is read from ``source_type``, or from ``prob_galaxy > 0.5`` when present;
    a truth table's ``disk_frac`` (a simulated field's) is kept, to split galaxies by profile.

    Raises:
        BlissValueError: a required column is missing (the message names ``name``).
    """
    missing = [c for c in ("x", "y", *(f"flux_{b}" for b in bands)) if c not in table.colnames]
    if missing:
        raise BlissValueError(
            f"{name} lacks columns {missing}; expected x, y and flux_<band> for {list(bands)}."
        )

    plocs = xy_to_plocs(column_values(table, "x"), column_values(table, "y"))
    data = {
        "n_sources": torch.tensor([len(table)]),
        "plocs": torch.from_numpy(plocs).float().reshape(1, len(table), 2),
        "fluxes": torch.from_numpy(np.stack([column_values(table, f"flux_{b}") for b in bands], -1))
        .float()
        .reshape(1, len(table), len(bands)),
    }
    if "source_type" in table.colnames:
        data["source_type"] = (
            torch.from_numpy(column_values(table, "source_type")).float().view(1, -1, 1)
        )
    elif "prob_galaxy" in table.colnames:
        data["source_type"] = (
            torch.from_numpy(column_values(table, "prob_galaxy") > 0.5).float().view(1, -1, 1)
        )
    if "disk_frac" in table.colnames:
        data["disk_frac"] = (
            torch.from_numpy(column_values(table, "disk_frac")).float().view(1, -1, 1)
        )
    return FullCatalog(height_px, width_px, data)


def read_table(path: str | Path) -> QTable:
    """Read a catalog written by :func:`write_table`, with every unit restored.

    A FITS catalog's ``TUNIT`` of ``nmgy`` is not FITS-standard, so astropy's own reader warns
    and leaves it an ``UnrecognizedUnit``; here it becomes astropy's nanomaggy again. Column
    descriptions come back in ``info.description``; the ``TCOMMn`` cards astropy also copies into
    ``meta`` are dropped.

    Raises:
        BlissConfigError: the extension is not one of :data:`CATALOG_FORMATS`'s.
        BlissIOError: the file cannot be read.
    """
    path = Path(path)
    fmt = table_format(path)
    options = {"unit_parse_strict": "silent"} if fmt == "fits" else {}
    try:
        table = QTable.read(path, format=fmt, **options)
    except (OSError, ValueError) as err:
        raise BlissIOError(f"{path} cannot be read as a {fmt} catalog ({err}).") from err
    for name in table.colnames:
        unit = getattr(table[name], "unit", None)
        if isinstance(unit, u.UnrecognizedUnit):
            description = table[name].info.description
            table[name] = u.Quantity(table[name].value, u.Unit(unit.name, parse_strict="silent"))
            table[name].info.description = description
    table.meta = {k: v for k, v in table.meta.items() if not _COLUMN_KEYWORD.match(str(k))}
    return table


def stack_samples(samples: list[QTable]) -> QTable:
    """Join sample catalogs with a ``sample`` column."""
    for index, table in enumerate(samples):
        table["sample"] = np.full(len(table), index, dtype=np.int32)
        table["sample"].info.description = column_description("sample")
    return vstack(samples, metadata_conflicts="silent")


def table_format(path: str | Path) -> str:
    """The astropy ``format`` of a catalog file, from its extension.

    Raises:
        BlissConfigError: the extension is not one of :data:`CATALOG_FORMATS`'s.
    """
    path = Path(path)
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise BlissConfigError(
            f"{path}: unknown extension {path.suffix!r}; use one of {sorted(_BY_SUFFIX)}."
        )
    return fmt


def write_table(table: QTable, path: str | Path) -> Path:
    """Write by extension to a temporary file, then rename.

    ``.fits`` and ``.parquet`` keep units, column descriptions and meta; ``.csv`` is plain
    comma-separated values (units in the column reference); ``.ecsv`` is CSV with a YAML header
    that keeps them too. In FITS every column gets a ``TUNIT`` (``""`` when dimensionless; ``nmgy``
    although it is not a FITS-standard unit) and a ``TCOMM`` (its description), and numeric meta
    values stay numbers.

    Raises:
        BlissConfigError: the extension is not one of :data:`CATALOG_FORMATS`'s.
    """
    path = Path(path)
    fmt = table_format(path)
    out = QTable(table)
    # TUNITn / TCOMMn read back from an earlier FITS file are the columns' own, rewritten below
    out.meta = {
        key: _plain_meta(value)
        for key, value in table.meta.items()
        if not _COLUMN_KEYWORD.match(str(key))
    }
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # nmgy is not a FITS-standard unit: astropy warns, and _label_fits_columns writes TUNIT
        warnings.filterwarnings("ignore", message=".*native FITS format.*")
        out.write(tmp, format=fmt, overwrite=True)
        if fmt == "fits":
            _label_fits_columns(tmp, out)
    return path


def _plain_meta(value: Any) -> Any:
    """A meta value as FITS and YAML write it: numbers and booleans stay, the rest is text."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _label_fits_columns(path: Path, table: QTable) -> None:
    """Give every column of the table HDU of ``path`` a ``TUNIT`` and a ``TCOMM`` card."""
    with fits.open(path, mode="update") as hdus:
        header = hdus[1].header
        for number, name in enumerate(table.colnames, start=1):
            unit = getattr(table[name], "unit", None)
            text = "" if unit is None or unit == u.dimensionless_unscaled else unit.to_string()
            header.set(f"TUNIT{number}", text, after=f"TFORM{number}")
            description = table[name].info.description or ""
            header.set(f"TCOMM{number}", description, after=f"TUNIT{number}")
