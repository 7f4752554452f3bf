"""Catalogs of sources, per tile and per image.

Coordinates: internally a position is ``(row, col)`` in pixels with the origin at the outer corner
of the first pixel, so pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)`` and its centre is at
``(i + 0.5, j + 0.5)``. Output tables use the numpy convention instead (``x = col - 0.5``,
``y = row - 0.5``, pixel centres on integers); the conversion happens only in
:mod:`bliss.catalog.io`.

Standard per-source keys (``d`` in brackets): ``locs`` [2] (tile catalogs, fraction of the tile,
``(row, col)``), ``plocs`` [2] (full catalogs, pixels), ``source_type`` [1] (0 star, 1 galaxy),
``fluxes`` [n_bands] (nanomaggies), and the galaxy shape keys of :data:`GALAXY_KEYS`. Case studies
may add any other key with shape ``b ht wt m d``.

The written catalogs' columns are listed, with units and descriptions, in
:data:`bliss.catalog.columns.COLUMNS`; their ``flags`` bits in :data:`bliss.catalog.flags.FLAG_BITS`.
"""

from bliss.catalog.columns import COLUMNS
from bliss.catalog.flags import FLAG_BITS, source_flags
from bliss.catalog.full import FullCatalog, concat_full_catalogs
from bliss.catalog.io import catalog_to_table, read_table, table_to_full_catalog, write_table
from bliss.catalog.regions import write_regions
from bliss.catalog.tile import GALAXY_KEYS, SERSIC_KEY, TileCatalog

__all__ = [
    "COLUMNS",
    "FLAG_BITS",
    "GALAXY_KEYS",
    "SERSIC_KEY",
    "FullCatalog",
    "TileCatalog",
    "catalog_to_table",
    "concat_full_catalogs",
    "read_table",
    "source_flags",
    "table_to_full_catalog",
    "write_regions",
    "write_table",
]
