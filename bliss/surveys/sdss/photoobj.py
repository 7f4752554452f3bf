"""Read the SDSS pipeline's (PHOTO) catalog of a field, ``photoObj-<run6>-<camcol>-<field4>.fits``.

The photoObj file (HDU 1, one row per object) is what a standard survey pipeline found in the
frames bliss reads with :func:`~bliss.surveys.sdss.read_sdss_field`: a peer to compare with, not
ground truth. Fluxes (``PSFFLUX``, ``CMODELFLUX``, ``MODELFLUX``) are nanomaggies, one value per
band in u, g, r, i, z order, like the frames.

Pixel convention (checked on run 94 / camcol 1 / field 12): ``OBJC_ROWC`` / ``OBJC_COLC``, the
canonical centre, are pixel coordinates in the reference band's frame (header ``REF_BAND``, r)
with the *centre* of the first pixel at ``(0.5, 0.5)``: for the 98 unsaturated stars with
15 < r < 20, ``OBJC_ROWC - 0.5`` and ``OBJC_COLC - 0.5`` equal the 0-indexed position of their
``RA`` / ``DEC`` through the r frame's WCS to within 0.09 px in rows and 0.26 px in columns
(medians 0.014 and 0.057 px off ``0.5``; the residual grows smoothly towards the columns' ends,
where the frame's TAN WCS departs from PHOTO's own astrometric transformation). That is bliss's
internal convention (``(row, col)`` with pixel centres at ``i + 0.5``), so positions are used as
they are, and the table's ``x`` / ``y`` are ``OBJC_COLC - 0.5`` / ``OBJC_ROWC - 0.5``. The
per-band ``ROWC`` / ``COLC`` are not used: each is in its own band's frame.
"""

from collections.abc import Sequence
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import QTable

from bliss.errors import BlissIOError, BlissValueError
from bliss.surveys.sdss._files import (
    check_field_ids,
    check_ids,
    field_dir,
    find_file,
    photoobj_name,
    read_fits,
)

__all__ = ["GALAXY_FLUXES", "PHOTO_FLAGS", "find_photoobj", "photo_flag", "read_photoobj"]

_BANDS = ("u", "g", "r", "i", "z")
#: PHOTO ``OBJC_TYPE`` values of the objects bliss compares with
STAR, GALAXY = 6, 3
#: ``RESOLVE_STATUS`` bits (sdssMaskbits.par)
RUN_PRIMARY, RUN_IGNORE = 1 << 0, 1 << 3
#: flag name -> (1 for ``FLAGS``, 2 for ``FLAGS2``, bit); the PHOTO flags bliss reports or filters
PHOTO_FLAGS: dict[str, tuple[int, int]] = {
    "BRIGHT": (1, 1),
    "EDGE": (1, 2),
    "BLENDED": (1, 3),
    "CHILD": (1, 4),
    "CR": (1, 12),
    "INTERP": (1, 17),
    "SATUR": (1, 18),
    "NOTCHECKED": (1, 19),
    "SUBTRACTED": (1, 20),
    "DEBLENDED_AS_PSF": (1, 25),
    "MOVED": (1, 31),
    "SATUR_CENTER": (2, 11),
    "INTERP_CENTER": (2, 12),
    "DEBLEND_NOPEAK": (2, 14),
    "PSF_FLUX_INTERP": (2, 15),
    "MAYBE_CR": (2, 24),
    "NOTCHECKED_CENTER": (2, 26),
}
#: ``galaxy_flux`` option -> photoObj column
GALAXY_FLUXES = {"cmodel": "CMODELFLUX", "model": "MODELFLUX"}
_COLUMNS = (
    "OBJID",
    "RESOLVE_STATUS",
    "NCHILD",
    "OBJC_TYPE",
    "OBJC_FLAGS",
    "OBJC_ROWC",
    "OBJC_COLC",
    "RA",
    "DEC",
    "FLAGS",
    "FLAGS2",
    "PSFFLUX",
)


def find_photoobj(data_dir: str | Path, run: int, camcol: int, field: int) -> Path:
    """The photoObj file of a field in ``<data_dir>/<run>/<camcol>/<field>/``.

    Raises:
        BlissValueError: bad ids.
        BlissIOError: the file is not there (the message lists the paths tried).
    """
    check_field_ids(run, camcol, field)
    folder = field_dir(data_dir, run, camcol, field)
    return find_file([folder], photoobj_name(run, camcol, field), "photoObj")


def read_photoobj(
    path: str | Path,
    band: str = "r",
    shape: tuple[int, int] | None = None,
    galaxy_flux: str = "cmodel",
    ignore_flags: Sequence[str] = ("SATUR",),
    ids: tuple[int, int, int] | None = None,
) -> QTable:
    """PHOTO's detections in one frame, as a table on the ``band`` frame's pixel grid.

    Selection, in order:

    1. ``RESOLVE_STATUS`` without ``RUN_IGNORE`` and ``NCHILD == 0``: drops deblended parents
       (their children, the deblended sources, are kept), the first-pass ``BRIGHT`` copies of
       bright objects (each is measured again as an ordinary object) and PHOTO's blank-sky
       objects. Within one photoObj file every object left is a different detection;
       ``RUN_DUPLICATE`` / ``RUN_OVERLAPONLY`` objects (in the 128-row strips shared with the
       neighbouring fields) are kept because they are in this image (``run_primary`` tells them
       apart).
    2. Canonical centre inside the image when ``shape`` is given (bliss's catalogs keep the same
       sources); PHOTO also lists objects centred up to ~12 px outside the frame.

    Objects kept but marked ``ignore`` ("don't care": a bliss source matched to one counts
    neither for nor against bliss): ``OBJC_TYPE`` other than star (6) or galaxy (3) (type 0 has
    no photometry; on field 94-1-12 these are 30 of the 818 objects in the frame, all flagged
    ``EDGE`` and within 24 px of its border), and
    objects with any of ``ignore_flags`` set in ``band`` (default ``SATUR``: bliss sees saturated
    pixels as missing data, ``survey.mask_planes``, and PHOTO's fluxes of saturated stars are
    uncertain).

    Fluxes: ``PSFFLUX`` for stars (PHOTO's best flux for point sources), ``CMODELFLUX`` for
    galaxies (``galaxy_flux="cmodel"``: the best-fitting linear combination of the exponential
    and de Vaucouleurs fits, PHOTO's total-flux estimate, comparable with bliss's bulge + disk
    flux) or ``MODELFLUX`` (``"model"``: the better of the two fits in r, meant for colours).

    Args:
        path: the photoObj FITS file (see :func:`find_photoobj`).
        band: band whose pixel grid the positions are on; must be the file's ``REF_BAND``
            (r for SDSS) [default: r].
        shape: ``(h, w)`` of the image in pixels; objects centred outside are dropped
            [default: None, keep all]. A cut-out's photoObj may carry ``CUTROW0`` / ``CUTCOL0``
            in its primary header, like the frame cut-outs; positions are then shifted to it.
        galaxy_flux: ``cmodel`` or ``model`` [default: cmodel].
        ignore_flags: names from :data:`PHOTO_FLAGS` that make an object "don't care"
            [default: SATUR].
        ids: ``(run, camcol, field)`` the file must be for [default: None, not checked].

    Returns:
        One row per object: ``objid`` (str), ``x``, ``y`` (pix, 0-indexed, pixel centres on
        integers, as bliss's catalogs), ``ra``, ``dec`` (deg), ``objc_type``, ``source_type`` (0
        star, 1 galaxy, -1 other), ``flux_<band>`` for u, g, r, i, z (nmgy; NaN for other
        types), ``child`` (a deblended child), ``run_primary``, ``flags``, ``flags2`` (PHOTO's
        flags in ``band``) and ``ignore`` (bool). ``meta`` holds ``PATH``, ``RUN``,
        ``CAMCOL``, ``FIELD`` and ``GALFLUX``.

    Raises:
        BlissIOError: the file is missing, unreadable, for another field, or lacks a column.
        BlissValueError: ``band``, ``galaxy_flux`` or a flag name is unknown, or ``band`` is not
            the file's reference band.

    Example:
        >>> from pathlib import Path
        >>> data = Path(__file__).parents[3] / "tests" / "data" / "sdss"  # 192 x 192 cut-outs
        >>> table = read_photoobj(find_photoobj(data, 94, 1, 12), shape=(192, 192))
        >>> star = table[table["flux_r"].value > 1000][0]
        >>> round(float(star["y"].value), 1), round(float(star["x"].value), 1), int(star["source_type"])
        (83.3, 113.5, 0)
    """
    path = Path(path)
    if band not in _BANDS:
        raise BlissValueError(f"band={band!r}; expected one of {list(_BANDS)}.")
    if galaxy_flux not in GALAXY_FLUXES:
        raise BlissValueError(
            f"galaxy_flux={galaxy_flux!r}; expected one of {sorted(GALAXY_FLUXES)}."
        )
    unknown = [name for name in ignore_flags if name not in PHOTO_FLAGS]
    if unknown:
        raise BlissValueError(
            f"ignore_flags has unknown PHOTO flags {unknown}; expected names from {sorted(PHOTO_FLAGS)}."
        )
    columns = (*_COLUMNS, GALAXY_FLUXES[galaxy_flux])

    def _read(hdus: fits.HDUList) -> tuple[fits.Header, dict[str, np.ndarray]]:
        header = hdus[0].header
        if ids is not None:
            check_ids(
                header, path, dict(zip(("RUN", "CAMCOL", "FIELD"), ids, strict=True)), "photoObj"
            )
        if len(hdus) < 2 or not isinstance(hdus[1], fits.BinTableHDU):
            raise BlissIOError(
                f"photoObj file {path} has no table in HDU 1; expected the SDSS photoObj layout."
            )
        names = set(hdus[1].columns.names)
        missing = [name for name in columns if name not in names]
        if missing:
            raise BlissIOError(
                f"photoObj file {path} lacks columns {missing}; expected an SDSS DR8+ photoObj "
                "file (or a cut-out made by tests/data/make_sdss_cutouts.py that keeps them)."
            )
        data = hdus[1].data
        return header.copy(), {name: np.asarray(data[name]) for name in columns}

    header, data = read_fits(path, _read, "photoObj")
    band_index = _check_reference_band(header, band, path)
    keep = ((data["RESOLVE_STATUS"] & RUN_IGNORE) == 0) & (data["NCHILD"] == 0)
    rows = data["OBJC_ROWC"].astype(np.float64) - float(header.get("CUTROW0", 0))
    cols = data["OBJC_COLC"].astype(np.float64) - float(header.get("CUTCOL0", 0))
    if shape is not None:
        height, width = shape
        keep &= (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    data = {key: value[keep] for key, value in data.items()}
    rows, cols = rows[keep], cols[keep]
    return _table(data, rows, cols, band_index, galaxy_flux, ignore_flags, path, header)


def photo_flag(table: QTable, name: str) -> np.ndarray:
    """Whether PHOTO flag ``name`` (see :data:`PHOTO_FLAGS`) is set in a photoObj table.

    Args:
        table: a :func:`read_photoobj` table (its ``flags`` / ``flags2`` columns).
        name: the flag.

    Returns:
        Shape ``n`` (bool).

    Raises:
        BlissValueError: unknown flag name.
    """
    if name not in PHOTO_FLAGS:
        raise BlissValueError(
            f"PHOTO flag {name!r} is unknown; expected one of {sorted(PHOTO_FLAGS)}."
        )
    word, bit = PHOTO_FLAGS[name]
    values = np.asarray(table["flags" if word == 1 else "flags2"], dtype=np.int64)
    return ((values >> bit) & 1).astype(bool)


def _check_reference_band(header: fits.Header, band: str, path: Path) -> int:
    """Index of ``band``, which must be the file's canonical (``REF_BAND``) band."""
    ref_index = int(header.get("REF_BAND", 2))
    if not 0 <= ref_index < len(_BANDS):
        raise BlissIOError(f"photoObj file {path} has REF_BAND={ref_index}; expected 0..4.")
    if _BANDS[ref_index] != band:
        raise BlissValueError(
            f"band={band!r} but photoObj file {path} gives canonical positions in "
            f"{_BANDS[ref_index]!r} (REF_BAND={ref_index}); align the image to "
            f"{_BANDS[ref_index]!r} (survey.reference_band)."
        )
    return ref_index


def _table(
    data: dict[str, np.ndarray],
    rows: np.ndarray,
    cols: np.ndarray,
    band_index: int,
    galaxy_flux: str,
    ignore_flags: Sequence[str],
    path: Path,
    header: fits.Header,
) -> QTable:
    objc_type = data["OBJC_TYPE"].astype(np.int64)
    star, galaxy = objc_type == STAR, objc_type == GALAXY
    fluxes = np.where(
        star[:, None],
        data["PSFFLUX"],
        np.where(galaxy[:, None], data[GALAXY_FLUXES[galaxy_flux]], np.nan),
    ).astype(np.float64)
    table = QTable()
    table["objid"] = np.char.strip(data["OBJID"].astype(str))
    table["x"] = (cols - 0.5) * u.pix
    table["y"] = (rows - 0.5) * u.pix
    table["ra"] = data["RA"].astype(np.float64) * u.deg
    table["dec"] = data["DEC"].astype(np.float64) * u.deg
    table["objc_type"] = objc_type
    table["source_type"] = np.where(star, 0, np.where(galaxy, 1, -1)).astype(np.int16)
    for index, name in enumerate(_BANDS):
        table[f"flux_{name}"] = fluxes[:, index] * u.nmgy
    table["child"] = ((data["OBJC_FLAGS"].astype(np.int64) >> PHOTO_FLAGS["CHILD"][1]) & 1) > 0
    table["run_primary"] = (data["RESOLVE_STATUS"] & RUN_PRIMARY) > 0
    table["flags"] = data["FLAGS"][:, band_index].astype(np.int64)
    table["flags2"] = data["FLAGS2"][:, band_index].astype(np.int64)
    ignore = ~(star | galaxy)
    for name in ignore_flags:
        ignore |= photo_flag(table, name)
    table["ignore"] = ignore
    table.meta.update(
        {
            "PATH": str(path),
            "RUN": header.get("RUN"),
            "CAMCOL": header.get("CAMCOL"),
            "FIELD": header.get("FIELD"),
            "GALFLUX": galaxy_flux,
        }
    )
    return table
