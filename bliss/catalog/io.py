"""Catalogs <-> astropy tables.

Tables use the numpy pixel convention: ``x`` is the column and ``y`` the row, 0-indexed, with
pixel centres on integers, so ``x = col - 0.5`` and ``y = row - 0.5`` in terms of bliss's internal
``(row, col)`` (origin at the image corner). This module and :mod:`bliss.surveys` are the only
places that convert.
"""

from collections.abc import Sequence

import astropy.units as u
import numpy as np
import torch
from astropy.table import QTable, Table

from bliss.catalog.full import FullCatalog
from bliss.catalog.tile import GALAXY_KEYS
from bliss.errors import BlissValueError

__all__ = ["full_catalog_to_table", "table_to_full_catalog"]


def full_catalog_to_table(catalog: FullCatalog, index: int, bands: Sequence[str]) -> QTable:
    """The sources of image ``index`` as a table with units.

    Columns: ``x``, ``y`` (pix), ``source_type`` (0 star, 1 galaxy), ``flux_<band>`` (nmgy) and the
    galaxy shape keys present in the catalog.
    """
    n = int(catalog["n_sources"][index])
    plocs = catalog["plocs"][index, :n].double().numpy()
    table = QTable()
    table["x"] = (plocs[:, 1] - 0.5) * u.pix
    table["y"] = (plocs[:, 0] - 0.5) * u.pix
    if "source_type" in catalog:
        table["source_type"] = catalog["source_type"][index, :n, 0].numpy().round().astype(np.int16)
    fluxes = catalog["fluxes"][index, :n].double().numpy()
    for b, band in enumerate(bands):
        table[f"flux_{band}"] = fluxes[:, b] * u.nmgy
    for key in GALAXY_KEYS:
        if key in catalog:
            table[key] = catalog[key][index, :n, 0].double().numpy()
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

    plocs = np.stack([column("y") + 0.5, column("x") + 0.5], axis=-1)
    data = {
        "n_sources": torch.tensor([len(table)]),
        "plocs": torch.from_numpy(plocs).float().unsqueeze(0),
        "fluxes": torch.from_numpy(np.stack([column(f"flux_{b}") for b in bands], -1))
        .float()
        .unsqueeze(0),
    }
    if "source_type" in table.colnames:
        data["source_type"] = torch.from_numpy(column("source_type")).float().view(1, -1, 1)
    elif "prob_galaxy" in table.colnames:
        data["source_type"] = torch.from_numpy(column("prob_galaxy") > 0.5).float().view(1, -1, 1)
    if len(table) == 0:
        data = {
            k: (v if k == "n_sources" else v.reshape(1, 0, v.shape[-1] if v.ndim == 3 else 2))
            for k, v in data.items()
        }
    return FullCatalog(height_px, width_px, data)
