"""Regenerate the SDSS cut-outs in ``tests/data/sdss/`` from the full files in ``../shared/data``.

Run from anywhere: ``python tests/data/make_sdss_cutouts.py [--source DIR]``.

The cut-out is a 192 x 192 px box (rows 370..561, columns 1050..1241 of every band's frame) of
run 94, camcol 1, field 12 around a bright, isolated, unsaturated star (r-band peak ~14000 counts,
PSF flux ~1170 nmgy) at about row 454, column 1164 of the r frame. Its r box holds the bad column
1189 (INTERP plane), its i box the bad columns 1124..1125. Every file keeps its SDSS layout:

* frames: the image box, the calibration vector of its columns, the sky grid cropped to the
  cells the box needs (``XINTERP`` / ``YINTERP`` shifted to match), HDU 3 unchanged; the WCS
  keeps working through ``CRPIX1 -= col0``, ``CRPIX2 -= row0``; ``CUTROW0`` / ``CUTCOL0`` record
  the box origin (the psField PSF polynomial takes full-frame positions).
* fpM: the spans inside the box, shifted to box coordinates; ``MASKROWS`` / ``MASKCOLS`` = 192.
* psField: HDUs 0..6 (PSF of the five bands and the per-band summary), unchanged.
* photoField: the rows of fields 11..13, unchanged.
* photoObj: the objects whose canonical centre (``OBJC_ROWC``, ``OBJC_COLC``) is in the box, only
  the columns :func:`bliss.surveys.sdss.photoobj.read_photoobj` reads (plus ``ID``, ``PARENT``),
  values unchanged (full-frame positions); ``CUTROW0`` / ``CUTCOL0`` in the primary header.
"""

import argparse
import bz2
import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

BANDS = ("u", "g", "r", "i", "z")


@dataclass(frozen=True)
class Box:
    """A square cut-out of one field: its ids and the frame pixels it keeps."""

    run: int
    camcol: int
    field: int
    row0: int
    col0: int
    size: int


#: the sparse field around a bright isolated star, and a crowded 128 px box of the M2 frame
#: (rows 630..757, columns 310..437: where the issue's HST-scored region starts)
BOXES = (Box(94, 1, 12, 370, 1050, 192), Box(2583, 2, 136, 630, 310, 128))
HERE = Path(__file__).parent
DEFAULT_SOURCE = HERE.parents[2] / "shared" / "data" / "sdss"


def crop_frame(source: Path, target: Path, box: Box) -> None:
    """Write the box of one frame file, with its calibration, sky grid and WCS adjusted."""
    with fits.open(source, memmap=False) as hdus:
        header = hdus[0].header.copy()
        header["CRPIX1"] -= box.col0
        header["CRPIX2"] -= box.row0
        header["CUTROW0"] = (box.row0, "row of pixel (0, 0) in the full SDSS frame")
        header["CUTCOL0"] = (box.col0, "column of pixel (0, 0) in the full SDSS frame")
        header["HISTORY"] = (
            f"bliss cut-out rows {box.row0}..{box.row0 + box.size - 1} cols {box.col0}..{box.col0 + box.size - 1}"
        )
        image = hdus[0].data[box.row0 : box.row0 + box.size, box.col0 : box.col0 + box.size]
        calib = hdus[1].data[box.col0 : box.col0 + box.size]
        sky = hdus[2].data
        grid = sky["ALLSKY"][0]
        grid_cols = sky["XINTERP"][0][box.col0 : box.col0 + box.size]
        grid_rows = sky["YINTERP"][0][box.row0 : box.row0 + box.size]
        # the grid cells bilinear interpolation touches, plus one for safety
        row_lo = max(0, int(np.floor(grid_rows.min())) - 1)
        row_hi = min(grid.shape[0], int(np.ceil(grid_rows.max())) + 2)
        col_lo = max(0, int(np.floor(grid_cols.min())) - 1)
        col_hi = min(grid.shape[1], int(np.ceil(grid_cols.max())) + 2)
        grid = grid[row_lo:row_hi, col_lo:col_hi]
        columns = [
            fits.Column(
                "ALLSKY",
                f"{grid.size}E",
                dim=f"({grid.shape[1]}, {grid.shape[0]})",
                array=grid[np.newaxis],
            ),
            fits.Column("XINTERP", f"{box.size}E", array=(grid_cols - col_lo)[np.newaxis]),
            fits.Column("YINTERP", f"{box.size}E", array=(grid_rows - row_lo)[np.newaxis]),
        ]
        out = fits.HDUList(
            [
                fits.PrimaryHDU(image, header),
                fits.ImageHDU(calib, hdus[1].header),
                fits.BinTableHDU.from_columns(columns),
                hdus[3].copy(),
            ]
        )
        _write_compressed(out, target, bz2.open)


def crop_fpm(source: Path, target: Path, box: Box) -> None:
    """Keep the spans of every mask plane that fall in the box, in box coordinates."""
    with fits.open(source, memmap=False) as hdus:
        header = hdus[0].header.copy()
        header["MASKROWS"] = box.size
        header["MASKCOLS"] = box.size
        out = [fits.PrimaryHDU(header=header)]
        for hdu in hdus[1:-1]:
            out.append(_crop_plane(hdu, box))
        out.append(hdus[-1].copy())
        _write_compressed(fits.HDUList(out), target, gzip.open)


def _crop_plane(hdu: fits.BinTableHDU, box: Box) -> fits.BinTableHDU:
    regions = []
    for region in hdu.data:
        spans = np.frombuffer(np.asarray(region["s"], dtype=np.uint8).tobytes(), dtype=">i2")
        spans = spans.reshape(-1, 3).astype(np.int64)
        spans[:, 0] += region["row0"] - box.row0
        spans[:, 1:] += region["col0"] - box.col0
        spans[:, 1] = np.clip(spans[:, 1], 0, box.size)
        spans[:, 2] = np.clip(spans[:, 2], -1, box.size - 1)
        keep = (spans[:, 0] >= 0) & (spans[:, 0] < box.size) & (spans[:, 1] <= spans[:, 2])
        spans = spans[keep]
        if len(spans):
            regions.append(spans)
    names = ["refcntr", "nspan", "row0", "col0", "rmin", "rmax", "cmin", "cmax", "npix"]
    values = {name: [] for name in names}
    blobs = []
    for spans in regions:
        values["refcntr"].append(1)
        values["nspan"].append(len(spans))
        values["row0"].append(0)
        values["col0"].append(0)
        values["rmin"].append(spans[:, 0].min())
        values["rmax"].append(spans[:, 0].max())
        values["cmin"].append(spans[:, 1].min())
        values["cmax"].append(spans[:, 2].max())
        values["npix"].append(int((spans[:, 2] - spans[:, 1] + 1).sum()))
        blobs.append(np.frombuffer(spans.astype(">i2").tobytes(), dtype=np.uint8))
    columns = [
        fits.Column(name, "1J", array=np.array(values[name], dtype=np.int32)) for name in names
    ]
    blob_array = np.empty(len(blobs), dtype=object)
    blob_array[:] = blobs
    columns.append(fits.Column("s", "PB()", array=blob_array))
    return fits.BinTableHDU.from_columns(columns)


#: photoObj columns kept in the cut-out
PHOTOOBJ_COLUMNS = (
    "OBJID",
    "ID",
    "PARENT",
    "NCHILD",
    "RESOLVE_STATUS",
    "OBJC_TYPE",
    "OBJC_FLAGS",
    "OBJC_ROWC",
    "OBJC_COLC",
    "RA",
    "DEC",
    "FLAGS",
    "FLAGS2",
    "PSFFLUX",
    "CMODELFLUX",
    "MODELFLUX",
)


def crop_photoobj(source: Path, target: Path, box: Box) -> None:
    """Keep the photoObj rows centred in the box and the columns the reader needs."""
    with fits.open(source, memmap=False) as hdus:
        header = hdus[0].header.copy()
        header["CUTROW0"] = (box.row0, "row of pixel (0, 0) in the full SDSS frame")
        header["CUTCOL0"] = (box.col0, "column of pixel (0, 0) in the full SDSS frame")
        table = hdus[1].data
        if table is None:  # no objects (the M2 frame: PHOTO did not run there), kept as it is
            fits.HDUList([fits.PrimaryHDU(header=header), hdus[1].copy()]).writeto(
                target, overwrite=True
            )
            return
        rows, cols = table["OBJC_ROWC"], table["OBJC_COLC"]
        inside = (
            (rows >= box.row0)
            & (rows < box.row0 + box.size)
            & (cols >= box.col0)
            & (cols < box.col0 + box.size)
        )
        columns = [
            fits.Column(c.name, c.format, unit=c.unit, dim=c.dim, array=table[c.name][inside])
            for c in hdus[1].columns
            if c.name in PHOTOOBJ_COLUMNS
        ]
        out = fits.HDUList([fits.PrimaryHDU(header=header), fits.BinTableHDU.from_columns(columns)])
        out.writeto(target, overwrite=True)


def _write_compressed(hdus: fits.HDUList, target: Path, opener) -> None:
    plain = target.with_suffix("")
    hdus.writeto(plain, overwrite=True)
    with open(plain, "rb") as source, opener(target, "wb") as out:
        shutil.copyfileobj(source, out)
    plain.unlink()


def write_box(source: Path, target: Path, box: Box) -> None:
    """Every file of one box (frames, masks, psField, photoObj, photoField rows)."""
    run, camcol, field = box.run, box.camcol, box.field
    src_field = source / str(run) / str(camcol) / str(field)
    dst_field = target / str(run) / str(camcol) / str(field)
    dst_field.mkdir(parents=True, exist_ok=True)
    for band in BANDS:
        name = f"frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2"
        crop_frame(src_field / name, dst_field / name, box)
        name = f"fpM-{run:06d}-{band}{camcol}-{field:04d}.fit.gz"
        crop_fpm(src_field / name, dst_field / name, box)
    name = f"psField-{run:06d}-{camcol}-{field:04d}.fit"
    with fits.open(src_field / name, memmap=False) as hdus:
        end = hdus.fileinfo(7)["hdrLoc"]  # byte-exact copy of HDUs 0..6
    (dst_field / name).write_bytes((src_field / name).read_bytes()[:end])
    name = f"photoObj-{run:06d}-{camcol}-{field:04d}.fits"
    crop_photoobj(src_field / name, dst_field / name, box)
    name = f"photoField-{run:06d}-{camcol}.fits"
    with fits.open(src_field.parent / name, memmap=False) as hdus:
        table = hdus[1].data
        rows = table[(table["FIELD"] >= field - 1) & (table["FIELD"] <= field + 1)]
        out = fits.HDUList([hdus[0].copy(), fits.BinTableHDU(rows, hdus[1].header)])
        out.writeto(dst_field.parent / name, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="the shared sdss/ folder"
    )
    parser.add_argument("--target", type=Path, default=HERE / "sdss", help="where the cut-outs go")
    args = parser.parse_args()
    for box in BOXES:
        write_box(args.source, args.target, box)
    total = sum(path.stat().st_size for path in args.target.rglob("*") if path.is_file())
    print(f"wrote {args.target}: {total / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
