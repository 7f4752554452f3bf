"""Predicted sources -> an astropy ``QTable`` with units, written atomically."""

import datetime
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import QTable, vstack
from astropy.wcs import WCS

from bliss.atomic import atomic_path
from bliss.catalog.convert import nmgy_to_mag
from bliss.errors import BlissConfigError

__all__ = ["catalog_table", "stack_samples", "write_table"]

_SHAPE_UNITS = {
    "disk_frac": u.dimensionless_unscaled,
    "beta_rad": u.rad,
    "disk_q": u.dimensionless_unscaled,
    "disk_hlr_arcsec": u.arcsec,
    "bulge_q": u.dimensionless_unscaled,
    "bulge_hlr_arcsec": u.arcsec,
}
_FORMATS = {
    ".fits": "fits",
    ".fit": "fits",
    ".parquet": "parquet",
    ".csv": "ascii.csv",
    ".ecsv": "ascii.ecsv",
}


def catalog_table(
    sources: dict[str, np.ndarray],
    bands: Sequence[str],
    wcs: WCS | None,
    meta: dict[str, Any],
    interval: tuple[float, float] = (0.05, 0.95),
) -> QTable:
    """The contract catalog: one row per source.

    Columns: ``x``, ``y`` (0-indexed pixels, pixel centres on integers), ``ra``, ``dec`` (deg, when
    there is a WCS), ``prob_source``, ``prob_galaxy``, ``flux_<band>`` (posterior median, nmgy),
    ``flux_<band>_lo`` / ``_hi`` (``interval`` quantiles), ``mag_<band>`` (AB), galaxy shape
    columns, and any extra key a case study's factors add (point estimates). ``meta`` keys should
    be FITS-safe (at most 8 upper-case characters).
    """
    table = QTable()
    x = sources["col"] - 0.5
    y = sources["row"] - 0.5
    table["x"] = x * u.pix
    table["y"] = y * u.pix
    if wcs is not None:
        ra, dec = wcs.pixel_to_world_values(x, y)
        table["ra"] = np.asarray(ra) * u.deg
        table["dec"] = np.asarray(dec) * u.deg
    for key in ("prob_source", "prob_galaxy"):
        if key in sources:
            table[key] = sources[key].astype(np.float32)
    if "source_type" in sources and "prob_galaxy" not in sources:  # a posterior sample
        table["source_type"] = sources["source_type"].reshape(-1).round().astype(np.int16)
    low, high = interval
    for index, band in enumerate(bands):
        flux = sources["fluxes"][:, index]
        table[f"flux_{band}"] = flux * u.nmgy
        if f"fluxes@{low:g}" in sources:
            table[f"flux_{band}_lo"] = sources[f"fluxes@{low:g}"][:, index] * u.nmgy
            table[f"flux_{band}_hi"] = sources[f"fluxes@{high:g}"][:, index] * u.nmgy
        table[f"mag_{band}"] = np.asarray(nmgy_to_mag(_tensor(flux))) * u.mag
    skip = {
        "row",
        "col",
        "prob_source",
        "prob_galaxy",
        "fluxes",
        "locs",
        "source_type",
        "n_sources",
    }
    for key, value in sources.items():
        if key in skip or "@" in key:
            continue
        unit = _SHAPE_UNITS.get(key, u.dimensionless_unscaled)
        if value.ndim == 2 and value.shape[1] == 1:
            table[key] = value[:, 0] * unit
        else:
            table[key] = value * unit
    table.meta.update(meta)
    table.meta.setdefault("DATE", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    return table


def _tensor(values: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(values, dtype=torch.float64)


def stack_samples(samples: list[QTable]) -> QTable:
    """Join sample catalogs with a ``sample`` column."""
    for index, table in enumerate(samples):
        table["sample"] = np.full(len(table), index, dtype=np.int32)
    return vstack(samples, metadata_conflicts="silent")


def write_table(table: QTable, path: str | Path) -> Path:
    """Write by extension to a temporary file, then rename.

    ``.fits`` and ``.parquet`` keep units and meta; ``.csv`` is plain comma-separated values
    (units in the README); ``.ecsv`` is CSV with a YAML header that keeps units and meta.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BlissConfigError(
            f"predict.output={path}: unknown extension {path.suffix!r}; use one of {sorted(_FORMATS)}."
        )
    out = QTable(table)
    out.meta = {k: str(v) for k, v in table.meta.items()}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # nmgy is not a FITS-standard unit; astropy keeps it in its own header metadata
        warnings.filterwarnings("ignore", message=".*native FITS format.*")
        out.write(tmp, format=fmt, overwrite=True)
    return path
