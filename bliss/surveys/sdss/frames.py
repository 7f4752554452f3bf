"""Read an SDSS field: five calibrated frames back in electrons, masked and on one pixel grid.

Layout of a ``frame-<band>-<run6>-<camcol>-<field4>.fits.bz2`` file (verified on run 94 and run
2583, rerun 301):

* HDU 0: the image, ``h w`` float32 (1489 x 2048) in nanomaggies, sky subtracted, with a TAN WCS
  (``CRPIX``/``CRVAL``/``CD``) and ``RUN``, ``CAMCOL``, ``FRAME`` (the field number), ``FILTER``.
* HDU 1: the calibration, nanomaggies per count, one value per column (2048,). It includes the
  flat field, so it varies by ~1% across columns around the header's ``NMGY``.
* HDU 2: the sky, one-row table: ``ALLSKY`` a coarse grid in counts, 192 x 256 as numpy reads it
  (rows x columns); ``XINTERP`` (2048,) and ``YINTERP`` (1489,) give, for each frame column and
  row, its fractional position on that grid. The sky at pixel ``(row, col)`` is ``ALLSKY``
  bilinearly interpolated at ``(YINTERP[row], XINTERP[col])``, edges extended (``XINTERP``
  starts at -0.44).
* HDU 3: the astrometric transformation (not used).

Counts are ``image / calib[col] + sky``; electrons are counts times the band's ``GAIN`` (the
photoField row with ``FIELD == field``; its 5-element columns are in u, g, r, i, z order).
"""

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from bliss.errors import BlissIOError, BlissValueError
from bliss.surveys.interpolation import linear_weights
from bliss.surveys.moffat import fwhm_map_arcsec
from bliss.surveys.sdss._files import (
    check_field_ids,
    check_ids,
    field_dir,
    find_file,
    fpm_name,
    frame_name,
    photofield_name,
    psfield_name,
    read_fits,
)
from bliss.surveys.sdss.align import check_overlap, map_pixels, pixel_grid_map, resample_band
from bliss.surveys.sdss.masks import DEFAULT_MASK_PLANES, read_fpm_planes
from bliss.surveys.sdss.psf import SdssPsf
from bliss.surveys.wcs import celestial_wcs

__all__ = ["SDSS_BANDS", "SdssField", "SdssFrame", "read_sdss_field"]

#: SDSS bands, in the order of every 5-element photoField and psField column
SDSS_BANDS = ("u", "g", "r", "i", "z")


@dataclass
class SdssFrame:
    """One band of an SDSS field on the reference band's pixel grid.

    Attributes:
        band: band name.
        path: the frame file it came from.
        electrons: electrons per pixel, sky included, NaN where masked or outside this band's
            footprint. Shape ``h w``.
        sky: the SDSS sky model, electrons per pixel (finite everywhere). Shape ``h w``.
        mask: True where ``electrons`` is NaN. Shape ``h w``.
        gain: electrons per count.
        nmgy_per_count: the frame's calibration per column of its *own* pixel grid, before
            resampling. Shape ``w_band``.
        magzero: AB magnitude of one electron at the median column calibration:
            ``nmgy = electrons * 10**(0.4 * (22.5 - magzero))``. The calibration varies by ~1%
            across columns; :meth:`SdssField.nmgy_per_electron` gives it per pixel.
        psf: the psField PSF, in this band's own full-frame pixel coordinates.
        wcs: celestial WCS of this band's own pixel grid.
        pixel_origin: ``(row, col)`` of this file's pixel (0, 0) in the full SDSS frame: (0, 0)
            except for cut-outs, whose header says ``CUTROW0`` / ``CUTCOL0``.
        saturated: True where the fpM ``SATUR`` plane marks a saturated pixel (on the reference
            grid: any saturated band pixel among the four nearest). Shape ``h w``.
    """

    band: str
    path: Path
    electrons: np.ndarray
    sky: np.ndarray
    mask: np.ndarray
    gain: float
    nmgy_per_count: np.ndarray
    magzero: float
    psf: SdssPsf
    wcs: WCS
    pixel_origin: tuple[int, int]
    saturated: np.ndarray

    def __repr__(self) -> str:
        """Band, shape, gain and zero point."""
        return (
            f"SdssFrame(band={self.band!r}, shape={self.electrons.shape}, gain={self.gain:.3f}, "
            f"magzero={self.magzero:.3f}, masked={self.mask.mean():.1%})"
        )


@dataclass
class SdssField:
    """An SDSS field: one :class:`SdssFrame` per band, all on the reference band's pixel grid.

    Attributes:
        run: SDSS run.
        camcol: camera column, 1..6.
        field: field number.
        reference_band: the band whose pixel grid all bands were resampled to.
        wcs: celestial WCS of that grid.
        frames: band name -> frame, in channel order.
    """

    run: int
    camcol: int
    field: int
    reference_band: str
    wcs: WCS
    frames: dict[str, SdssFrame]

    def __repr__(self) -> str:
        """Ids, bands and shape."""
        shape = next(iter(self.frames.values())).electrons.shape
        return (
            f"SdssField(run={self.run}, camcol={self.camcol}, field={self.field}, "
            f"bands={self.bands}, reference_band={self.reference_band!r}, shape={shape})"
        )

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names in channel order."""
        return tuple(self.frames)

    @property
    def images(self) -> np.ndarray:
        """Electrons, sky included, NaN where missing. Shape ``c h w``."""
        return np.stack([frame.electrons for frame in self.frames.values()])

    @property
    def background(self) -> np.ndarray:
        """Sky, electrons per pixel. Shape ``c h w``."""
        return np.stack([frame.sky for frame in self.frames.values()])

    @property
    def saturated(self) -> np.ndarray:
        """Saturated pixels (fpM ``SATUR``) per band. Shape ``c h w`` (bool)."""
        return np.stack([frame.saturated for frame in self.frames.values()])

    @property
    def magzero(self) -> np.ndarray:
        """AB magnitude of one electron per band (median column calibration). Shape ``c``."""
        return np.array([frame.magzero for frame in self.frames.values()])

    def band_pixel(self, band: str, row: float, col: float) -> tuple[float, float]:
        """Full-frame ``(row, col)`` in ``band``'s own frame of reference-grid pixel ``(row, col)``."""
        frame = self._frame(band)
        band_rows, band_cols = map_pixels(self.wcs, frame.wcs, np.array([row]), np.array([col]))
        return (
            float(band_rows[0]) + frame.pixel_origin[0],
            float(band_cols[0]) + frame.pixel_origin[1],
        )

    def geometry(self) -> "SdssField":
        """This field without its pixels (empty images): WCSs, PSFs and calibrations only.

        What a PSF model kept past the read needs (:meth:`psf_image`, :meth:`band_pixel`),
        without holding ~27 MB per band of images.
        """
        empty, none = np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=bool)
        frames = {
            band: dataclasses.replace(frame, electrons=empty, sky=empty, mask=none, saturated=none)
            for band, frame in self.frames.items()
        }
        return dataclasses.replace(self, frames=frames)

    def psf_image(self, band: str, row: float, col: float) -> np.ndarray:
        """The psField PSF of ``band`` at reference-grid pixel ``(row, col)``. Shape ``h w``.

        It is the PSF of the band's own frame; resampling onto the reference grid widens it a
        little (cubic spline) or more (bilinear).
        """
        return self._frame(band).psf.image(*self.band_pixel(band, row, col))

    def psf_fwhm_arcsec(self) -> np.ndarray:
        """PSF FWHM per band at the centre of the image, arcsec. Shape ``c``.

        The FWHM of the best-fitting beta = 3.5 Moffat (``SdssPsf.fwhm_arcsec(method="moffat")``):
        models are trained on Moffat PSFs labelled by their FWHM, and the psField's own width
        (noise-equivalent area) is ~25% larger for the same PSF, which would tell a model the
        seeing is much worse than it is.
        """
        first = next(iter(self.frames.values()))
        height, width = first.electrons.shape
        centre = ((height - 1) / 2, (width - 1) / 2)
        return np.array(
            [
                frame.psf.fwhm_arcsec(*self.band_pixel(band, *centre), method="moffat")
                for band, frame in self.frames.items()
            ]
        )

    def psf_fwhm_map(self, grid: int = 5) -> np.ndarray:
        """PSF FWHM at every reference-grid pixel, arcsec (see :meth:`psf_fwhm_arcsec`). Shape ``c h w``.

        The psField PSF is fitted at a ``grid x grid`` lattice of places and interpolated
        (:func:`~bliss.surveys.moffat.fwhm_map_arcsec`); across a frame the FWHM varies by
        ~5-10 % (r band of 94-1-12: 1.28-1.38").
        """
        first = next(iter(self.frames.values()))
        shape = first.electrons.shape
        return np.stack(
            [
                fwhm_map_arcsec(
                    lambda row, col, band=band, frame=frame: frame.psf.fwhm_arcsec(
                        *self.band_pixel(band, row, col), method="moffat"
                    ),
                    shape,
                    grid,
                )
                for band, frame in self.frames.items()
            ]
        )

    def nmgy_per_electron(self, band: str) -> np.ndarray:
        """Nanomaggies per electron of every reference-grid pixel (per-column calibration). Shape ``h w``."""
        frame = self._frame(band)
        height, width = frame.electrons.shape
        _, band_cols = pixel_grid_map(self.wcs, frame.wcs, (height, width))
        columns = np.arange(frame.nmgy_per_count.size)
        return (np.interp(band_cols, columns, frame.nmgy_per_count) / frame.gain).astype(np.float32)

    def _frame(self, band: str) -> SdssFrame:
        if band not in self.frames:
            raise BlissValueError(f"band {band!r} was not read; this field has bands {self.bands}.")
        return self.frames[band]


def read_sdss_field(
    data_dir: str | Path,
    run: int,
    camcol: int,
    field: int,
    bands: tuple[str, ...] = SDSS_BANDS,
    align_to: str = "r",
    *,
    mask_planes: tuple[str, ...] = DEFAULT_MASK_PLANES,
    interp_order: int = 3,
) -> SdssField:
    """Read frames, masks, gains and PSFs of one SDSS field and align the bands.

    Files are looked up in ``<data_dir>/<run>/<camcol>/<field>/`` (frames, fpM, psField; ``.bz2``,
    ``.gz`` or plain) and ``<data_dir>/<run>/<camcol>/`` (photoField), the layout written by
    :func:`bliss.surveys.sdss.download_sdss_field`.

    Each band is resampled onto the ``align_to`` band's pixel grid: every reference pixel centre
    goes through the reference WCS to the sky and through the band's WCS to the band's pixels,
    where the band is interpolated (the SDSS bands are offset by up to ~14 px).

    Args:
        data_dir: root folder of the SDSS files.
        run: SDSS run, e.g. 94.
        camcol: camera column, 1..6.
        field: field number, e.g. 12.
        bands: bands to read, in channel order [default: u, g, r, i, z].
        align_to: reference band; must be in ``bands`` [default: r].
        mask_planes: fpM planes whose pixels become NaN [default: INTERP, SATUR, CR].
        interp_order: 3 [default] for a cubic spline (masked pixels filled with the sky before
            the spline; a resampled pixel is NaN if any of its 4 nearest band pixels is masked or
            outside the frame), or 1 for bilinear interpolation (same NaN rule; it smooths the
            noise more).

    Returns:
        The field. Electrons: ``(image / calib[col] + sky) * gain`` (see the module docstring).

    Raises:
        BlissValueError: unknown band, ``align_to`` not in ``bands``, bad ``interp_order`` or
            ids, or unknown mask plane.
        BlissIOError: a file is missing (the message names it), truncated, for another
            run/camcol/field/band, or a band's footprint does not overlap the reference band.

    Example:
        >>> from pathlib import Path
        >>> data = Path(__file__).parents[3] / "tests" / "data" / "sdss"  # 192 x 192 cut-outs
        >>> sdss = read_sdss_field(data, 94, 1, 12, bands=("g", "r"))
        >>> sdss.images.shape
        (2, 192, 192)
        >>> sdss.magzero.round(2).tolist()
        [30.04, 29.99]
    """
    bands = _check_arguments(run, camcol, field, bands, align_to, interp_order)
    folder = field_dir(data_dir, run, camcol, field)
    ids = {"RUN": run, "CAMCOL": camcol, "FIELD": field}
    gains, psfield = field_gains_and_psfield(data_dir, run, camcol, field)
    # find every file before the slow reads, so that a missing one fails at once
    frame_paths = {
        band: find_file([folder], frame_name(band, run, camcol, field), "frame") for band in bands
    }
    fpm_paths = {
        band: find_file([folder], fpm_name(band, run, camcol, field), "fpM") for band in bands
    }
    # the reference band first: its WCS and shape define the grid of the others
    order = (align_to, *(band for band in bands if band != align_to))

    def calibrate(band: str) -> SdssFrame:
        path, header, image_nmgy, calib, sky_grid = raw.pop(band)
        sky_counts = _sky_counts(*sky_grid)
        wcs = _celestial_wcs(header, path)
        shape = image_nmgy.shape
        gain = gains[band]
        planes = read_fpm_planes(
            fpm_paths[band], tuple(dict.fromkeys((*mask_planes, "SATUR"))), shape=shape, ids=ids
        )
        mask = np.zeros(shape, dtype=bool)
        for plane in mask_planes:
            mask |= planes[plane.upper()]
        saturated = planes["SATUR"]
        electrons = (image_nmgy / calib[np.newaxis, :] + sky_counts) * gain
        electrons[mask] = np.nan
        sky = np.multiply(sky_counts, gain, out=sky_counts)
        if band != align_to:
            coordinates = pixel_grid_map(ref.wcs, wcs, ref.electrons.shape)
            check_overlap(*coordinates, shape, path, frame_paths[align_to])
            electrons = resample_band(electrons, sky, coordinates, interp_order)
            sky = ndimage.map_coordinates(
                sky, coordinates, output=np.float32, order=1, mode="nearest"
            )
            near = ndimage.map_coordinates(
                saturated.astype(np.float32),
                coordinates,
                output=np.float32,
                order=1,
                mode="constant",
                cval=0.0,
            )
            saturated = near > 0
        return SdssFrame(
            band=band,
            path=path,
            electrons=electrons.astype(np.float32),
            sky=sky.astype(np.float32),
            mask=~np.isfinite(electrons),
            gain=gain,
            nmgy_per_count=calib.astype(np.float32),
            magzero=float(22.5 - 2.5 * np.log10(np.median(calib) / gain)),
            psf=SdssPsf.from_psfield(psfield, band, run=run, camcol=camcol, field=field),
            wcs=wcs,
            pixel_origin=(int(header.get("CUTROW0", 0)), int(header.get("CUTCOL0", 0))),
            saturated=saturated,
        )

    # bz2 decompression and the spline resampling dominate and release the GIL: threads
    with ThreadPoolExecutor(max_workers=min(len(order), os.cpu_count() or 1)) as pool:
        raw = dict(
            zip(
                order,
                pool.map(lambda b: _read_frame(frame_paths[b], b, run, camcol, field), order),
                strict=True,
            )
        )
        ref = calibrate(align_to)
        frames = {
            align_to: ref,
            **dict(zip(order[1:], pool.map(calibrate, order[1:]), strict=True)),
        }
    return SdssField(run, camcol, field, align_to, ref.wcs, {band: frames[band] for band in bands})


def _check_arguments(
    run: int, camcol: int, field: int, bands: tuple[str, ...], align_to: str, interp_order: int
) -> tuple[str, ...]:
    check_field_ids(run, camcol, field)
    bands = tuple(bands)
    unknown = [band for band in bands if band not in SDSS_BANDS]
    if unknown or not bands or len(set(bands)) != len(bands):
        raise BlissValueError(
            f"bands={list(bands)}; expected distinct names from {list(SDSS_BANDS)}."
        )
    if align_to not in bands:
        raise BlissValueError(
            f"align_to={align_to!r} is not one of bands={list(bands)}; add it or align to a read band."
        )
    if interp_order not in (1, 3):
        raise BlissValueError(
            f"interp_order={interp_order!r}; expected 1 (bilinear) or 3 (cubic spline)."
        )
    return bands


def field_gains_and_psfield(
    data_dir: str | Path, run: int, camcol: int, field: int
) -> tuple[dict[str, float], Path]:
    """The gain of every band (from photoField) and the psField path of one field."""
    folder = field_dir(data_dir, run, camcol, field)
    gains = _read_gains(
        find_file([folder.parent, folder], photofield_name(run, camcol), "photoField"),
        run,
        camcol,
        field,
    )
    return gains, find_file([folder], psfield_name(run, camcol, field), "psField")


def _read_gains(path: Path, run: int, camcol: int, field: int) -> dict[str, float]:
    """``GAIN`` per band from the photoField row with ``FIELD == field``."""

    def _read(hdus: fits.HDUList) -> dict[str, float]:
        check_ids(hdus[0].header, path, {"RUN": run, "CAMCOL": camcol}, "photoField")
        table = hdus[1].data
        rows = table[
            (table["FIELD"] == field) & (table["RUN"] == run) & (table["CAMCOL"] == camcol)
        ]
        if len(rows) != 1:
            raise BlissIOError(
                f"photoField file {path} has {len(rows)} rows for run {run}, camcol {camcol}, "
                f"field {field} (fields {int(table['FIELD'].min())}..{int(table['FIELD'].max())}); "
                "expected one. Use the photoField file of this run and camcol."
            )
        gain = np.asarray(rows[0]["GAIN"], dtype=np.float64)
        return {band: float(gain[index]) for index, band in enumerate(SDSS_BANDS)}

    return read_fits(path, _read, "photoField")


def _read_frame(
    path: Path, band: str, run: int, camcol: int, field: int
) -> tuple[Path, fits.Header, np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Header, image (nanomaggies), calibration (nmgy per count) and sky grid (counts).

    The sky grid (``ALLSKY``, ``YINTERP``, ``XINTERP``: :func:`_sky_counts`) becomes a full image
    only when its band is calibrated, so five of them are never held at once.
    """

    def _read(
        hdus: fits.HDUList,
    ) -> tuple[Path, fits.Header, np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
        header = hdus[0].header
        check_ids(header, path, {"RUN": run, "CAMCOL": camcol}, "frame")
        # the header's FRAME is the CCD's own frame counter (field + 2 x (CAMROW - 1)); the
        # field number is in the astrometry table of HDU 3
        astrometry = hdus[3].data
        found = (int(astrometry["FIELD"][0]), str(astrometry["FILTER"][0]).strip())
        if found != (field, band):
            raise BlissIOError(
                f"frame file {path} holds field {found[0]}, band {found[1]!r} (HDU 3), expected "
                f"field {field}, band {band!r}; the file belongs to another field or is misnamed."
            )
        image = np.asarray(hdus[0].data)  # float32 on disk; promoted where it is calibrated
        calib = np.asarray(hdus[1].data, dtype=np.float64)
        sky_table = hdus[2].data
        grid = np.asarray(sky_table["ALLSKY"][0], dtype=np.float64)
        grid_cols = np.asarray(sky_table["XINTERP"][0], dtype=np.float64)
        grid_rows = np.asarray(sky_table["YINTERP"][0], dtype=np.float64)
        height, width = image.shape
        if calib.shape != (width,) or grid_cols.shape != (width,) or grid_rows.shape != (height,):
            raise BlissIOError(
                f"frame file {path}: image {image.shape}, calibration {calib.shape}, XINTERP "
                f"{grid_cols.shape}, YINTERP {grid_rows.shape}; expected ({width},), ({width},), "
                f"({height},). The file is damaged."
            )
        return path, header.copy(), image, calib, (grid, grid_rows, grid_cols)

    return read_fits(path, _read, "frame")


def _sky_counts(grid: np.ndarray, grid_rows: np.ndarray, grid_cols: np.ndarray) -> np.ndarray:
    """The sky of every pixel, counts. Shape ``h w``.

    The ``ALLSKY`` grid is interpolated bilinearly at each row's ``YINTERP`` and each column's
    ``XINTERP`` grid position. Bilinear interpolation on a grid is separable: ``(h x gh) @ (gh x gw) @ (gw x w)``.
    """
    row_weights = linear_weights(np.arange(grid.shape[0]), grid_rows, clamp=True)
    col_weights = linear_weights(np.arange(grid.shape[1]), grid_cols, clamp=True)
    return row_weights @ grid @ col_weights.T


def _celestial_wcs(header: fits.Header, path: Path) -> WCS:
    wcs = celestial_wcs(header)
    if wcs is None:  # the bands are aligned through their WCSs: a frame without one is unusable
        raise BlissIOError(
            f"frame file {path}: the header has no valid celestial WCS; expected a TAN WCS."
        )
    return wcs
