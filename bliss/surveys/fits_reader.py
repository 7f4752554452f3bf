"""Read the FITS input contract of ``bliss mode=predict``.

One 2-D image HDU per band, ``EXTNAME`` = band name (case-insensitive, any order; the primary HDU
may be empty), in electrons with the sky included. Each image header has a celestial WCS and
``MAGZERO`` (AB magnitude of one electron); optionally ``PSF_FWHM`` (arcsec, Moffat) and
``PSF_BETA`` (default 3.5). An optional HDU ``<band>_BKG`` holds the sky in electrons per pixel;
without it the sky is estimated with ``sep``. An optional HDU ``<band>_FWHM`` holds a map of the
PSF FWHM in arcsec where the PSF varies over the image (see
:func:`~bliss.surveys.moffat.fwhm_map_arcsec`); bands without one use ``PSF_FWHM`` everywhere.
NaN pixels are missing data.
"""

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from bliss.errors import BlissIOError, BlissWarning
from bliss.protocols import ObservingSetup, SurveyImage
from bliss.surveys.wcs import celestial_wcs

__all__ = ["estimate_background", "read_fits_image"]

_AUXILIARY = ("_bkg", "_fwhm")  # EXTNAME suffixes of per-band maps that are not images


def estimate_background(image: np.ndarray, box_px: int = 64) -> np.ndarray:
    """Sky map of one band with ``sep.Background`` (NaN pixels masked). Shape ``h w``."""
    import sep

    data = np.ascontiguousarray(image, dtype=np.float64)
    mask = ~np.isfinite(data)
    filled = np.where(mask, np.nanmedian(data) if (~mask).any() else 0.0, data)
    box = int(min(box_px, max(8, min(data.shape) // 2)))
    return np.asarray(sep.Background(filled, mask=mask, bw=box, bh=box).back(), dtype=np.float32)


def read_fits_image(
    path: str | Path, survey: ObservingSetup, bands: tuple[str, ...] | None = None
) -> SurveyImage:
    """Read and validate a FITS input.

    Args:
        path: the FITS file.
        survey: fallbacks for a missing PSF (the survey preset's).
        bands: bands the model needs, in its channel order [default: the survey's].

    Raises:
        BlissIOError: not a FITS file; a band HDU missing or extra; shapes differ; no MAGZERO.

    Warns:
        BlissWarning: no celestial WCS (the catalog will have no ``ra`` / ``dec``).
    """
    path = Path(path)
    bands = tuple(bands or survey.bands)
    try:
        hdus = fits.open(path, memmap=False)
    except FileNotFoundError as err:
        raise BlissIOError(f"{path} does not exist; check predict.input.") from err
    except OSError as err:
        raise BlissIOError(
            f"{path} is not a readable FITS file ({err}); expected one image HDU per band."
        ) from err
    with hdus:
        found = {}
        for hdu in hdus:
            name = str(hdu.header.get("EXTNAME", "")).strip()
            if name and hdu.data is not None:
                found[name.lower()] = hdu
        wanted = {b.lower() for b in bands}
        image_names = {n for n in found if not n.endswith(_AUXILIARY)}
        missing = sorted(wanted - image_names)
        extra = sorted(image_names - wanted)
        if missing or extra:
            raise BlissIOError(
                f"{path}: image HDUs {sorted(image_names)} do not match the model's bands {list(bands)} "
                f"(missing {missing}, extra {extra}); give one HDU per band with EXTNAME = band."
            )
        images, backgrounds, fwhm, magzero, fwhm_maps = [], [], [], [], []
        shape = None
        wcs = None
        for band in bands:
            hdu = found[band.lower()]
            data = np.asarray(hdu.data, dtype=np.float32)
            if data.ndim != 2:
                raise BlissIOError(
                    f"{path} HDU {hdu.name}: data has {data.ndim} dims; expected a 2-D image."
                )
            if shape is None:
                shape = data.shape
            elif data.shape != shape:
                raise BlissIOError(
                    f"{path} HDU {hdu.name}: shape {data.shape} differs from {shape} of the first band; "
                    "align and crop all bands to the same pixel grid."
                )
            header = hdu.header
            if "MAGZERO" not in header:
                raise BlissIOError(
                    f"{path} HDU {hdu.name}: no MAGZERO keyword; add the AB magnitude of one electron."
                )
            magzero.append(float(header["MAGZERO"]))
            fwhm.append(float(header.get("PSF_FWHM", survey.psf_fwhm_arcsec(band))))
            background = _auxiliary_map(found, f"{band.lower()}_bkg", data.shape, path)
            if background is None:
                background = estimate_background(data)
            fwhm_maps.append(_auxiliary_map(found, f"{band.lower()}_fwhm", data.shape, path))
            images.append(data)
            backgrounds.append(background)
            if band == survey.reference_band:
                wcs = celestial_wcs(header)
    if wcs is None:
        warnings.warn(
            f"{path}: the reference band has no celestial WCS; the catalog will have no ra/dec.",
            BlissWarning,
            stacklevel=2,
        )
    stack = np.stack(images)
    if not np.isfinite(stack).any() or not np.nanmax(np.abs(stack)) > 0:
        warnings.warn(
            f"{path}: the image is empty (all zero or missing).", BlissWarning, stacklevel=2
        )
    return SurveyImage(
        path,
        bands,
        stack,
        np.stack(backgrounds),
        np.array(fwhm, dtype=np.float32),
        np.array(magzero),
        wcs,
        psf_fwhm_map=None
        if all(m is None for m in fwhm_maps)
        else np.stack(
            [
                np.full(stack.shape[1:], f, np.float32) if m is None else m
                for m, f in zip(fwhm_maps, fwhm, strict=True)
            ]
        ),
    )


def _auxiliary_map(
    found: dict[str, fits.ImageHDU], name: str, shape: tuple[int, int], path: Path
) -> np.ndarray | None:
    """The ``<band>_BKG`` / ``<band>_FWHM`` map, checked against the image, or None if absent."""
    if name not in found:
        return None
    values = np.asarray(found[name].data, dtype=np.float32)
    if values.shape != shape:
        raise BlissIOError(
            f"{path} HDU {found[name].name}: shape {values.shape} differs from the image {shape}."
        )
    if name.endswith("_fwhm") and not (np.isfinite(values).all() and (values > 0).all()):
        raise BlissIOError(
            f"{path} HDU {found[name].name}: expected a positive, finite PSF FWHM (arcsec) at every pixel."
        )
    return values
