"""SDSS mask planes (fpM files): which pixels of a frame are defects.

Layout of an fpM file (verified on run 94 and run 2583 files, rerun 301):

* HDU 0 header: ``RUN``, ``CAMCOL``, ``FIELD``, ``MASKROWS`` x ``MASKCOLS`` (the frame shape,
  1489 x 2048) and ``NPLANE``.
* The last HDU (``TYPENAME = 'S_MASKTYPE'``) names the planes: rows ``(defName, attributeName,
  Value)`` such as ``('S_MASKTYPE', 'S_MASK_INTERP', 0)``. Plane ``Value`` is stored in HDU
  ``Value + 1``: INTERP 0, SATUR 1, NOTCHECKED 2, OBJECT 3, BRIGHTOBJECT 4, BINOBJECT 5,
  CATOBJECT 6, SUBTRACTED 7, GHOST 8, CR 9.
* Each plane HDU is a binary table with one row per masked region (an "object mask"): bounding
  box ``rmin rmax cmin cmax``, offsets ``row0 col0`` (0 in all files seen), pixel count ``npix``
  and ``s``, a variable-length byte array holding ``nspan`` spans as big-endian int16 triples
  ``(row, first col, last col)``, ends inclusive. The spans of a row cover exactly ``npix``
  pixels.

Bad columns are not a plane of their own: photo interpolates over them, so they are INTERP
(whole columns 0 .. 1488).
"""

from pathlib import Path

import numpy as np
from astropy.io import fits

from bliss.errors import BlissIOError, BlissValueError
from bliss.surveys.sdss._files import check_ids, read_fits

__all__ = ["DEFAULT_MASK_PLANES", "read_fpm_mask", "read_fpm_planes"]

#: planes whose pixels hold no measurement of the sky: interpolated (bad columns, cosmic rays,
#: bleed trails), saturated and cosmic-ray pixels
DEFAULT_MASK_PLANES = ("INTERP", "SATUR", "CR")
_PREFIX = "S_MASK_"


def read_fpm_mask(
    path: str | Path,
    planes: tuple[str, ...] = DEFAULT_MASK_PLANES,
    *,
    shape: tuple[int, int] | None = None,
    ids: dict[str, int] | None = None,
) -> np.ndarray:
    """Union of the ``planes`` of an fpM file as a boolean image.

    Args:
        path: the ``fpM-<run6>-<band><camcol>-<field4>.fit.gz`` file.
        planes: plane names without the ``S_MASK_`` prefix [default: INTERP, SATUR, CR].
        shape: if given, the file's ``MASKROWS`` x ``MASKCOLS`` must equal it (the frame shape).
        ids: expected header ids, e.g. ``{"RUN": 94, "CAMCOL": 1, "FIELD": 12}``.

    Returns:
        True where a pixel is in any of the planes. Shape ``h w``.

    Raises:
        BlissValueError: a plane name is not in the file.
        BlissIOError: the file is missing, damaged, for another field, or of another shape.
    """
    masks = read_fpm_planes(path, planes, shape=shape, ids=ids)
    return np.logical_or.reduce(list(masks.values())) if masks else _empty_mask(path, shape)


def read_fpm_planes(
    path: str | Path,
    planes: tuple[str, ...],
    *,
    shape: tuple[int, int] | None = None,
    ids: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Each of the ``planes`` of an fpM file as a boolean image, read in one pass.

    Args:
        path: the fpM file.
        planes: plane names without the ``S_MASK_`` prefix (any case).
        shape: if given, the file's ``MASKROWS`` x ``MASKCOLS`` must equal it (the frame shape).
        ids: expected header ids.

    Returns:
        Upper-case plane name -> True where a pixel is in that plane. Shapes ``h w``.

    Raises:
        BlissValueError: a plane name is not in the file.
        BlissIOError: the file is missing, damaged, for another field, or of another shape.
    """
    path = Path(path)

    def _read(hdus: fits.HDUList) -> dict[str, np.ndarray]:
        header = hdus[0].header
        check_ids(header, path, ids or {}, "fpM")
        n_rows, n_cols = int(header["MASKROWS"]), int(header["MASKCOLS"])
        if shape is not None and (n_rows, n_cols) != tuple(shape):
            raise BlissIOError(
                f"fpM file {path} masks a {n_rows} x {n_cols} frame, but the frame is "
                f"{shape[0]} x {shape[1]}; use the fpM file of the same band and field."
            )
        plane_hdu = _plane_hdus(hdus, path)
        unknown = [plane for plane in planes if plane.upper() not in plane_hdu]
        if unknown:
            raise BlissValueError(
                f"mask planes {unknown} are not in {path}; expected names from {sorted(plane_hdu)}."
            )
        masks = {}
        for plane in dict.fromkeys(plane.upper() for plane in planes):
            masks[plane] = np.zeros((n_rows, n_cols), dtype=bool)
            _paint(masks[plane], hdus[plane_hdu[plane]].data, path)
        return masks

    return read_fits(path, _read, "fpM")


def _empty_mask(path: str | Path, shape: tuple[int, int] | None) -> np.ndarray:
    """No planes asked for: nothing masked, on the file's own frame shape."""

    def _read(hdus: fits.HDUList) -> np.ndarray:
        header = hdus[0].header
        return np.zeros((int(header["MASKROWS"]), int(header["MASKCOLS"])), dtype=bool)

    return np.zeros(shape, dtype=bool) if shape is not None else read_fits(Path(path), _read, "fpM")


def _plane_hdus(hdus: fits.HDUList, path: Path) -> dict[str, int]:
    """Plane name (no prefix) -> HDU index, from the ``S_MASKTYPE`` table."""
    for hdu in hdus[1:]:
        if str(hdu.header.get("TYPENAME", "")).strip() == "S_MASKTYPE":
            table = hdu.data
            names = [str(name).strip() for name in table["attributeName"]]
            values = [int(value) for value in table["Value"]]
            return {
                name.removeprefix(_PREFIX): value + 1
                for name, value in zip(names, values, strict=True)
                if name.startswith(_PREFIX) and value + 1 < len(hdus)
            }
    raise BlissIOError(
        f"fpM file {path} has no S_MASKTYPE table naming its mask planes; expected an SDSS fpM file."
    )


def _paint(mask: np.ndarray, table: fits.FITS_rec, path: Path) -> None:
    """Set the pixels of every span of every region in ``table``."""
    if table is None or len(table) == 0:
        return
    n_rows, n_cols = mask.shape
    for region in table:
        spans = np.frombuffer(np.asarray(region["s"], dtype=np.uint8).tobytes(), dtype=">i2")
        if spans.size % 3:
            raise BlissIOError(
                f"fpM file {path}: a span list has {spans.size} int16 values, expected triples "
                "(row, first col, last col); the file is damaged."
            )
        spans = spans.reshape(-1, 3).astype(np.int64)
        rows = spans[:, 0] + int(region["row0"])
        first = np.clip(spans[:, 1] + int(region["col0"]), 0, n_cols)
        last = np.clip(spans[:, 2] + int(region["col0"]), -1, n_cols - 1)
        for row, start, stop in zip(rows, first, last, strict=True):
            if 0 <= row < n_rows and start <= stop:
                mask[row, start : stop + 1] = True
