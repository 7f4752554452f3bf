"""Read the FITS input contract of ``bliss mode=predict`` (``docs/input.md``).

One 2-D image HDU per band, ``EXTNAME`` = band name (case-insensitive, any order; the primary HDU
may be empty). Each image header has a celestial WCS and ``MAGZERO`` (AB magnitude of one
electron); optionally ``PSF_FWHM`` (arcsec, Moffat) and ``PSF_BETA`` (default 3.5). NaN pixels
are missing data.

Pixel units (``BUNIT``, :data:`PIXEL_UNITS`): ``electron`` (the default when ``BUNIT`` is
absent), ``adu`` (times the header's ``GAIN``, electrons per ADU) or ``nanomaggy`` (divided by
the nanomaggies of one electron, ``10**(0.4 * (22.5 - MAGZERO))``). The model was trained on
electrons with the sky included, so everything is converted to that.

Sky (``sky``, :data:`SKY_CONVENTIONS`): ``included`` (the default) or ``subtracted``. An optional
HDU ``<band>_BKG`` holds the sky per pixel, in the image's unit: for an ``included`` image, its
level (without it the level is estimated with ``sep``); for a ``subtracted`` image, the sky that
was subtracted, added back. A ``subtracted`` image without ``<band>_BKG`` gets back the sky whose
Poisson variance is the image's noise: the sky-level part of an optional ``<band>_VAR``
(variance, image unit squared) or ``<band>_WHT`` (inverse variance) HDU, else of the pixels'
own scatter (see :func:`sky_from_noise`). Pixel statistics that contradict the declared
convention (a median within one robust sigma of zero for ``included``, above three for
``subtracted``) are refused.

An optional HDU ``<band>_FWHM`` holds a map of the PSF FWHM in arcsec where the PSF varies over
the image (see :func:`~bliss.surveys.moffat.fwhm_map_arcsec`); bands without one use
``PSF_FWHM`` everywhere.
"""

import math
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from bliss.catalog.convert import nmgy_per_electron
from bliss.errors import BlissConfigError, BlissIOError, BlissWarning
from bliss.protocols import ObservingSetup, SurveyImage
from bliss.surveys.wcs import celestial_wcs

__all__ = [
    "PIXEL_UNITS",
    "SKY_CONVENTIONS",
    "check_sky_convention",
    "estimate_background",
    "read_fits_image",
    "sky_from_noise",
]

#: the values of ``sky`` (``predict.sky``): does the image still hold the sky?
SKY_CONVENTIONS = ("included", "subtracted")
#: ``BUNIT`` spellings (lower case) -> the unit they mean
PIXEL_UNITS = {
    "electron": "electron",
    "electrons": "electron",
    "e-": "electron",
    "e": "electron",
    "adu": "adu",
    "count": "adu",
    "counts": "adu",
    "dn": "adu",
    "nanomaggy": "nanomaggy",
    "nanomaggies": "nanomaggy",
    "nmgy": "nanomaggy",
}
#: EXTNAME suffixes of per-band maps that are not images
_AUXILIARY = ("_bkg", "_fwhm", "_var", "_wht")
#: a sky-included band's median must exceed this many robust sigmas: a sky of s electrons has
#: sqrt(s) sigmas, so any sky above ~1 electron passes, and a sky-subtracted image (median near
#: 0 sigma, ~half of the pixels negative) fails
_INCLUDED_MIN_SIGMAS = 1.0
#: a sky-subtracted band's median must stay below this many robust sigmas (residual sky and the
#: sources lift it a little; a sky left in lifts it by sqrt(sky), 20 for SDSS r)
_SUBTRACTED_MAX_SIGMAS = 3.0
#: robust sigma of a Gaussian from the median absolute deviation
_MAD_TO_SIGMA = 1.4826


def _sep_background(image: np.ndarray, box_px: int) -> object:
    """``sep.Background`` of one band (NaN pixels masked, filled with the median)."""
    import sep

    data = np.ascontiguousarray(image, dtype=np.float64)
    mask = ~np.isfinite(data)
    filled = np.where(mask, np.nanmedian(data) if (~mask).any() else 0.0, data)
    box = int(min(box_px, max(8, min(data.shape) // 2)))
    return sep.Background(filled, mask=mask, bw=box, bh=box)


def estimate_background(image: np.ndarray, box_px: int = 64) -> np.ndarray:
    """Sky map of one band with ``sep.Background`` (NaN pixels masked). Shape ``h w``."""
    return np.asarray(_sep_background(image, box_px).back(), dtype=np.float32)


def sky_from_noise(
    image: np.ndarray, variance: np.ndarray | None = None, box_px: int = 64
) -> np.ndarray:
    """The sky whose Poisson noise is the image's noise, electrons per pixel. Shape ``h w``.

    The model was trained on sky-included images in electrons, whose noise variance equals the
    sky level; it normalises pixels by ``sqrt(background)``. Adding this sky to a sky-subtracted
    image gives it that relation, whatever the exposure, gain or coadd depth.

    Args:
        image: a sky-subtracted band, electrons. Shape ``h w``.
        variance: its per-pixel variance, electrons squared, or None: the variance is measured
            from the pixels (``sep``'s clipped RMS in ``box_px`` meshes, which ignores sources).
            Shape ``h w``.
        box_px: mesh side of the smooth map [default: 64].

    Returns:
        The smooth variance map (sources, which add their own Poisson variance to a variance
        plane, are clipped by the mesh estimate), clipped to at least 1e-3 electrons.
    """
    if variance is None:
        noise = np.asarray(_sep_background(image, box_px).rms(), dtype=np.float32) ** 2
    else:
        variance = np.where(np.isfinite(variance) & (variance > 0), variance, np.nan)
        noise = estimate_background(variance, box_px)
    return np.clip(noise, 1e-3, None).astype(np.float32)


def check_sky_convention(sky: str) -> None:
    """Raise unless ``sky`` (``predict.sky``) is one of :data:`SKY_CONVENTIONS`.

    Raises:
        BlissConfigError: an unknown convention.
    """
    if sky not in SKY_CONVENTIONS:
        raise BlissConfigError(
            f"predict.sky={sky!r}; expected one of {list(SKY_CONVENTIONS)}: does the image still "
            "hold the sky?"
        )


def read_fits_image(
    path: str | Path,
    survey: ObservingSetup,
    bands: tuple[str, ...] | None = None,
    *,
    sky: str = "included",
) -> SurveyImage:
    """Read and validate a FITS input.

    Args:
        path: the FITS file.
        survey: fallbacks for a missing PSF (the survey preset's).
        bands: bands the model needs, in its channel order [default: the survey's].
        sky: ``"included"`` (the pixels hold the sky) or ``"subtracted"`` (it was subtracted;
            it is added back) [default: ``"included"``].

    Returns:
        The image in electrons with the sky included, and its sky.

    Raises:
        BlissConfigError: ``sky`` is not one of :data:`SKY_CONVENTIONS`.
        BlissIOError: not a FITS file; a band HDU missing or extra; shapes differ; no MAGZERO;
            an unknown ``BUNIT``, or ``adu`` without a positive ``GAIN``; a band with no data
            (every pixel NaN or zero); pixel statistics that contradict ``sky``.

    Warns:
        BlissWarning: no celestial WCS (the catalog's ``ra`` / ``dec`` will be NaN).
    """
    path = Path(path)
    bands = tuple(bands or survey.bands)
    check_sky_convention(sky)
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
        images, backgrounds, fwhm, magzero, fwhm_maps, saturated = [], [], [], [], [], []
        shapes = []
        shape = None
        wcs = None
        for band in bands:
            hdu = found[band.lower()]
            raw = np.asarray(hdu.data, dtype=np.float32)
            if raw.ndim != 2:
                raise BlissIOError(
                    f"{path} HDU {hdu.name}: data has {raw.ndim} dims; expected a 2-D image."
                )
            if shape is None:
                shape = raw.shape
            elif raw.shape != shape:
                raise BlissIOError(
                    f"{path} HDU {hdu.name}: shape {raw.shape} differs from {shape} of the first band; "
                    "align and crop all bands to the same pixel grid."
                )
            header = hdu.header
            saturated.append(_saturated_pixels(raw, header, path, hdu.name))
            if saturated[-1] is not None:
                raw[saturated[-1]] = np.nan  # a clipped core is no measurement of the star
            if "MAGZERO" not in header:
                raise BlissIOError(
                    f"{path} HDU {hdu.name}: no MAGZERO keyword; add the AB magnitude of one electron."
                )
            magzero.append(float(header["MAGZERO"]))
            fwhm.append(float(header.get("PSF_FWHM", survey.psf_fwhm_arcsec(band))))
            shapes.append(_psf_shape_cards(header, path, hdu.name))
            per_unit = _electrons_per_unit(header, magzero[-1], path, hdu.name)
            data = raw * np.float32(per_unit)
            _check_has_data(data, path, hdu.name)
            _check_sky_convention(data, sky, path, hdu.name, header.get("BUNIT", "electron"))
            background = _auxiliary_map(found, f"{band.lower()}_bkg", data.shape, path)
            if background is not None:
                background = background * np.float32(per_unit)
            if sky == "subtracted":
                added = background
                if added is None:
                    variance = _variance_map(found, band, data.shape, path)
                    added = sky_from_noise(
                        data, None if variance is None else variance * np.float32(per_unit**2)
                    )
                data = data + added
            if background is None:
                background = estimate_background(data)
            fwhm_maps.append(_auxiliary_map(found, f"{band.lower()}_fwhm", data.shape, path))
            images.append(data)
            backgrounds.append(background)
            if band == survey.reference_band:
                wcs = celestial_wcs(header)
    if wcs is None:
        warnings.warn(
            f"{path}: the reference band has no celestial WCS; the catalog's ra/dec will be NaN.",
            BlissWarning,
            stacklevel=2,
        )
    stack = np.stack(images)
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
        psf_shape=_all_or_none(shapes, path),
        saturated=None
        if all(m is None for m in saturated)
        else np.stack([np.zeros(stack.shape[1:], bool) if m is None else m for m in saturated]),
    )


_SHAPE_CARDS = ("PSF_E1", "PSF_E2", "PSF_RHO4")


def _psf_shape_cards(header: fits.Header, path: Path, hdu: str) -> tuple[float, ...] | None:
    """``(PSF_E1, PSF_E2, PSF_RHO4)`` of one band's header, or None without them."""
    present = [card for card in _SHAPE_CARDS if card in header]
    if not present:
        return None
    if len(present) < len(_SHAPE_CARDS):
        raise BlissIOError(
            f"{path} HDU {hdu}: has {present} but not all of {list(_SHAPE_CARDS)}; the PSF's "
            "shape needs all three (bliss.simulator.psf_shape) or none."
        )
    e1, e2, rho4 = (float(header[card]) for card in _SHAPE_CARDS)
    if not (np.isfinite([e1, e2, rho4]).all() and math.hypot(e1, e2) < 1 and rho4 > 0):
        raise BlissIOError(
            f"{path} HDU {hdu}: PSF_E1={e1}, PSF_E2={e2}, PSF_RHO4={rho4}; expected a distortion "
            "of magnitude below 1 and a positive rho4 (2 for a Gaussian)."
        )
    return e1, e2, rho4


def _all_or_none(shapes: list, path: Path) -> np.ndarray | None:
    """The PSF shapes of all bands (``c 3``), or None when no band has them."""
    if all(shape is None for shape in shapes):
        return None
    if any(shape is None for shape in shapes):
        raise BlissIOError(
            f"{path}: some bands have PSF_E1/PSF_E2/PSF_RHO4 and others not; give them for "
            "every band or for none."
        )
    return np.array(shapes, dtype=np.float32)


def _saturated_pixels(
    raw: np.ndarray, header: fits.Header, path: Path, hdu: str
) -> np.ndarray | None:
    """Pixels at or above the band's ``SATURATE`` level (in the file's units), or None.

    Raises:
        BlissIOError: ``SATURATE`` is not a positive number.
    """
    if "SATURATE" not in header:
        return None
    level = header["SATURATE"]
    if isinstance(level, bool) or not isinstance(level, int | float) or not level > 0:
        raise BlissIOError(
            f"{path} HDU {hdu}: SATURATE={level!r}; expected the positive pixel value (in the "
            "HDU's own units) at which the detector saturates."
        )
    with np.errstate(invalid="ignore"):
        return np.isfinite(raw) & (raw >= level)


def _electrons_per_unit(header: fits.Header, magzero: float, path: Path, hdu: str) -> float:
    """Electrons per pixel unit of a band, from its ``BUNIT`` (and ``GAIN`` or ``MAGZERO``)."""
    bunit = str(header.get("BUNIT", "electron")).strip()
    unit = PIXEL_UNITS.get(bunit.lower())
    if unit is None:
        raise BlissIOError(
            f"{path} HDU {hdu}: BUNIT={bunit!r} is not a pixel unit bliss reads; expected "
            "electron, adu (with GAIN, electrons per ADU) or nanomaggy (converted with MAGZERO)."
        )
    if unit == "electron":
        return 1.0
    if unit == "nanomaggy":
        return 1.0 / nmgy_per_electron(magzero)
    gain = header.get("GAIN")
    try:
        gain = float(gain)
    except (TypeError, ValueError):
        gain = None
    if gain is None or not gain > 0:
        raise BlissIOError(
            f"{path} HDU {hdu}: BUNIT={bunit!r} but GAIN is {header.get('GAIN')!r}; expected a "
            "positive GAIN keyword in electrons per ADU to convert the pixels to electrons."
        )
    return gain


def _check_has_data(data: np.ndarray, path: Path, hdu: str) -> None:
    finite = np.isfinite(data)
    if not finite.any() or not np.abs(data[finite]).max() > 0:
        raise BlissIOError(
            f"{path} HDU {hdu}: no data (every pixel is NaN or zero); expected the band's "
            "image, with NaN only where pixels are missing."
        )


def _check_sky_convention(data: np.ndarray, sky: str, path: Path, hdu: str, bunit: str) -> None:
    """Refuse a band whose pixel statistics contradict the declared sky convention."""
    values = data[np.isfinite(data)]
    median = float(np.median(values))
    sigma = _MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
    negative = float((values < 0).mean())
    seen = (
        f"median {median:.4g} electrons, {sigma:.4g} robust sigma ({median / sigma:.2f} sigma), "
        f"{100 * negative:.0f} % of pixels negative (BUNIT {bunit!r})"
        if sigma > 0
        else f"median {median:.4g} electrons, no scatter (BUNIT {bunit!r})"
    )
    if sky == "included" and not median > _INCLUDED_MIN_SIGMAS * sigma:
        raise BlissIOError(
            f"{path} HDU {hdu}: predict.sky=included, but the pixels look sky-subtracted: {seen}. "
            f"A sky-included image has a median of at least {_INCLUDED_MIN_SIGMAS:g} sigma (the "
            "sky) and few negative pixels. If the sky was subtracted, set predict.sky=subtracted "
            "(and add a <band>_BKG HDU with the subtracted sky if you have it); see docs/input.md."
        )
    if sky == "subtracted" and median > _SUBTRACTED_MAX_SIGMAS * sigma:
        raise BlissIOError(
            f"{path} HDU {hdu}: predict.sky=subtracted, but the pixels still hold a sky: {seen}. "
            f"A sky-subtracted image has a median within {_SUBTRACTED_MAX_SIGMAS:g} sigma of 0. If "
            "the sky is in the image, set predict.sky=included; see docs/input.md."
        )


def _variance_map(
    found: dict[str, fits.ImageHDU], band: str, shape: tuple[int, int], path: Path
) -> np.ndarray | None:
    """The band's variance in image units squared, from ``<band>_VAR`` or ``<band>_WHT``."""
    variance = _auxiliary_map(found, f"{band.lower()}_var", shape, path)
    weight = _auxiliary_map(found, f"{band.lower()}_wht", shape, path)
    if variance is not None and weight is not None:
        raise BlissIOError(
            f"{path}: both {band.upper()}_VAR and {band.upper()}_WHT are present; give one "
            "(variance, or inverse variance)."
        )
    if weight is not None:
        with np.errstate(divide="ignore"):
            variance = np.where(weight > 0, 1.0 / weight, np.nan).astype(np.float32)
    return variance


def _auxiliary_map(
    found: dict[str, fits.ImageHDU], name: str, shape: tuple[int, int], path: Path
) -> np.ndarray | None:
    """A ``<band>_BKG`` / ``_FWHM`` / ``_VAR`` / ``_WHT`` map, checked, or None if absent."""
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
