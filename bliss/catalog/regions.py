"""DS9 region files of catalogs: a circle per source, green for stars and red for galaxies.

Positions come from a table of :func:`bliss.catalog.io.catalog_to_table`: ``ra`` / ``dec`` in
the ``fk5`` frame when every source has them (bliss writes the image WCS's equatorial
coordinates, ICRS for the shipped inputs, which differs from FK5 J2000 by less than 0.03
arcsec), else ``image`` coordinates, which DS9 counts from 1 at the centre of the first pixel:
``x + 1``, ``y + 1`` in the table's 0-indexed convention.
"""

from pathlib import Path

import numpy as np
from astropy.table import Table

from bliss.atomic import atomic_path
from bliss.catalog.io import column_values
from bliss.errors import BlissValueError

__all__ = ["REGION_COLORS", "write_regions"]

#: circle colour of stars and galaxies (``prob_galaxy >= 0.5``, or ``source_type`` 1)
REGION_COLORS = {"star": "green", "galaxy": "red"}
#: DS9 counts image pixels from 1; the table from 0
_DS9_ORIGIN = 1.0


def write_regions(
    table: Table,
    path: str | Path,
    *,
    radius_px: float = 5.0,
    pixel_scale_arcsec: float | None = None,
    title: str = "",
) -> Path:
    """Write a DS9 region file with a circle at every source of ``table``.

    Args:
        table: a catalog with ``x`` and ``y`` (0-indexed pixels), and optionally ``ra``, ``dec``
            (deg), ``prob_galaxy`` or ``source_type``.
        path: the ``.reg`` file to write (atomically).
        radius_px: circle radius, pixels [default: 5].
        pixel_scale_arcsec: pixel side; with it (and finite ``ra`` / ``dec`` for every source)
            the file is in ``fk5`` with radii in arcsec, else in ``image`` coordinates.
        title: a comment line at the top (e.g. the catalog's name).

    Returns:
        ``path``.

    Raises:
        BlissValueError: ``table`` has no ``x`` / ``y`` columns or ``radius_px`` is not positive.
    """
    if not {"x", "y"} <= set(table.colnames) or not radius_px > 0:
        raise BlissValueError(
            f"write_regions got columns {table.colnames} and radius_px={radius_px}; expected x "
            "and y (0-indexed pixels) and a positive radius."
        )
    galaxy = np.zeros(len(table), dtype=bool)
    if "prob_galaxy" in table.colnames:
        galaxy = column_values(table, "prob_galaxy") >= 0.5
    elif "source_type" in table.colnames:
        galaxy = column_values(table, "source_type") >= 0.5
    sky = (
        pixel_scale_arcsec is not None
        and {"ra", "dec"} <= set(table.colnames)
        and bool(np.isfinite(column_values(table, "ra")).all())
        and bool(np.isfinite(column_values(table, "dec")).all())
    )
    lines = [
        "# Region file format: DS9 version 4.1",
        f"# {title}".rstrip(),
        f"# bliss: {REGION_COLORS['star']} circles are stars, {REGION_COLORS['galaxy']} "
        "circles galaxies",
        'global color=green width=1 font="helvetica 10 normal roman" select=1 edit=1 move=1 '
        "delete=1 include=1 source=1",
    ]
    if sky:
        lines.append("fk5")
        first, second = column_values(table, "ra"), column_values(table, "dec")
        radius = f'{radius_px * pixel_scale_arcsec:.3f}"'
        position = "{:.7f},{:.7f}"
    else:
        lines.append("image")
        first = column_values(table, "x") + _DS9_ORIGIN
        second = column_values(table, "y") + _DS9_ORIGIN
        radius = f"{radius_px:.3f}"
        position = "{:.3f},{:.3f}"
    for a, b, is_galaxy in zip(first, second, galaxy, strict=True):
        color = REGION_COLORS["galaxy" if is_galaxy else "star"]
        lines.append(f"circle({position.format(a, b)},{radius}) # color={color}")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return Path(path)
