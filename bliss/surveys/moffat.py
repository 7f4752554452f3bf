"""Moffat equivalents of PSF models, and writing them as the ``PSF_FWHM`` / ``PSF_BETA`` cards.

``bliss mode=predict`` describes each band's PSF by a circular Moffat (``PSF_FWHM`` in arcsec and
``PSF_BETA``, see :mod:`bliss.surveys.fits_reader`). These functions turn a PSF image or model (a
:class:`~bliss.surveys.psfex.PsfexPsf`, an ``SdssPsf``, a stack of stars) into that Moffat.
"""

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage, optimize

from bliss.errors import BlissError, BlissIOError, BlissValueError
from bliss.protocols import PsfModel
from bliss.surveys.interpolation import linear_weights

__all__ = [
    "FWHM_METHODS",
    "add_halo",
    "fit_moffat_fwhm_arcsec",
    "fwhm_map_arcsec",
    "psf_fwhm_arcsec",
    "write_psf_header",
]

FWHM_METHODS = ("effective", "half_max", "moffat")
_GAUSSIAN_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
_FWHM_OVERSAMPLE = 8


def psf_fwhm_arcsec(
    image: np.ndarray, pixel_scale_arcsec: float, method: str = "effective", beta: float = 3.5
) -> float:
    """Full width at half maximum of a pixel-integrated PSF image, arcsec.

    Args:
        image: the PSF, sum 1, centred on its middle pixel. Shape ``h w``.
        pixel_scale_arcsec: pixel side, arcsec.
        method: ``"effective"`` [default]: the FWHM of the Gaussian with the same
            noise-equivalent area ``n_eff = 1 / sum(p**2)``, i.e. ``2.3548 sqrt(n_eff / 4 pi)``; it
            sets the S/N of PSF photometry (SDSS's ``psf_width``). ``"half_max"``: ``2 sqrt(A / pi)``
            with ``A`` the area above half the peak on the image resampled 8x finer with a cubic
            spline (the geometric mean of the axes' FWHM; it ignores the wings). ``"moffat"``: the
            FWHM of the Moffat of index ``beta`` that fits best (:func:`fit_moffat_fwhm_arcsec`):
            what the simulator's Moffat PSFs and ``PSF_FWHM`` mean, so what to tell a model trained
            on them.
        beta: Moffat index for ``method="moffat"``.

    Raises:
        BlissValueError: ``method`` is not one of :data:`FWHM_METHODS`.
    """
    if method not in FWHM_METHODS:
        raise BlissValueError(f"method={method!r}; expected one of {list(FWHM_METHODS)}.")
    psf = np.asarray(image, dtype=np.float64)
    if method == "moffat":
        return fit_moffat_fwhm_arcsec(psf, pixel_scale_arcsec, beta)
    if method == "effective":
        n_eff_px = 1.0 / np.sum((psf / psf.sum()) ** 2)
        return float(
            _GAUSSIAN_FWHM_PER_SIGMA * np.sqrt(n_eff_px / (4 * np.pi)) * pixel_scale_arcsec
        )
    height, width = psf.shape
    step = 1.0 / _FWHM_OVERSAMPLE
    rows = np.arange(0, height - 1 + step / 2, step)
    cols = np.arange(0, width - 1 + step / 2, step)
    fine = ndimage.map_coordinates(psf, np.meshgrid(rows, cols, indexing="ij"), order=3)
    area_px = (fine >= fine.max() / 2).sum() * step**2
    return float(2.0 * np.sqrt(area_px / np.pi) * pixel_scale_arcsec)


def fit_moffat_fwhm_arcsec(
    image: np.ndarray, pixel_scale_arcsec: float, beta: float = 3.5
) -> float:
    """FWHM of the circular Moffat that best fits a PSF image (least squares), arcsec.

    The Moffat is pixel-integrated and normalised on the same stamp as ``image``, so this is the
    ``PSF_FWHM`` that, with ``PSF_BETA = beta``, makes the simulator's PSF closest to ``image``.

    Args:
        image: a pixel-integrated PSF image centred on its middle pixel (any normalisation), e.g.
            a PSFEx or psField PSF, or a stack of star stamps. Shape ``h w``, odd sizes.
        pixel_scale_arcsec: pixel side of ``image``, arcsec.
        beta: Moffat index [default: 3.5, the survey presets' value].

    Raises:
        BlissValueError: ``image`` is not 2-D or sums to <= 0, the scale is not positive, or
            ``beta`` <= 1.1.

    Example:
        >>> import galsim
        >>> star = galsim.Moffat(beta=3.5, fwhm=1.0).drawImage(nx=25, ny=25, scale=0.2).array
        >>> round(fit_moffat_fwhm_arcsec(star, 0.2), 3)
        1.0
    """
    psf = np.asarray(image, dtype=np.float64)
    if psf.ndim != 2 or not psf.sum() > 0 or not pixel_scale_arcsec > 0:
        raise BlissValueError(
            f"image has shape {psf.shape} and sum {psf.sum():.3g}, pixel_scale_arcsec="
            f"{pixel_scale_arcsec}; expected a 2-D PSF image with a positive sum and a positive scale."
        )
    if not beta > 1.1:
        raise BlissValueError(f"beta={beta}; GalSim needs beta > 1.1 (typical values are 2.5-4.5).")
    psf = psf / psf.sum()
    height, width = psf.shape

    import galsim  # a third of a second to import; most commands never fit a Moffat

    def residual(fwhm_px: float) -> float:
        moffat = galsim.Moffat(beta=beta, fwhm=fwhm_px).drawImage(nx=width, ny=height, scale=1.0)
        model = moffat.array / moffat.array.sum()
        return float(np.sum((psf - model) ** 2))

    def fit(low: float, high: float) -> float:
        result = optimize.minimize_scalar(
            residual, bounds=(low, high), method="bounded", options={"xatol": 1e-4}
        )
        return float(result.x)

    widest = (0.5, float(min(height, width)))
    # search within a factor 2 of the effective width (a third fewer draws than the widest
    # range); a best fit on that range's edge is searched again over the widest one
    guess = psf_fwhm_arcsec(psf, 1.0)
    low, high = max(widest[0], guess / 2), min(widest[1], guess * 2)
    fwhm_px = fit(low, high) if low < high else fit(*widest)
    if min(fwhm_px - low, high - fwhm_px) < 1e-3 and (low, high) != widest:
        fwhm_px = fit(*widest)
    return fwhm_px * pixel_scale_arcsec


def fwhm_map_arcsec(
    fwhm_at: Callable[[float, float], float], shape: tuple[int, int], grid: int = 5
) -> np.ndarray:
    """A PSF FWHM map of an image from the FWHM at a ``grid x grid`` lattice of places.

    Survey PSF models vary smoothly over a frame (SDSS psField and PSFEx models are low-order
    polynomials in position), so the FWHM is evaluated at the centres of ``grid x grid`` equal
    cells and interpolated bilinearly in between (extrapolated linearly in the half cell beyond
    the outermost centres).

    Args:
        fwhm_at: FWHM in arcsec at a 0-indexed ``(row, col)`` of the image, e.g.
            ``lambda r, c: psf.fwhm_arcsec(r, c, method="moffat")``.
        shape: ``(height, width)`` of the image, pixels.
        grid: places per side (>= 2).

    Returns:
        The FWHM at every pixel, arcsec. Shape ``h w`` (float32).

    Raises:
        BlissValueError: ``grid`` < 2 or an empty ``shape``.

    Example:
        >>> m = fwhm_map_arcsec(lambda r, c: 1.0 + 0.001 * c, (20, 100), grid=3)
        >>> round(float(m[7, 0]), 4), round(float(m[7, 99]), 4)
        (1.0, 1.099)
    """
    height, width = (int(n) for n in shape)
    if grid < 2 or height < 1 or width < 1:
        raise BlissValueError(
            f"grid={grid}, shape={shape}; expected grid >= 2 places per side and a non-empty image."
        )
    rows = (np.arange(grid) + 0.5) * height / grid - 0.5
    cols = (np.arange(grid) + 0.5) * width / grid - 0.5
    values = np.array([[fwhm_at(float(r), float(c)) for c in cols] for r in rows])
    # bilinear is separable: (h x grid) @ (grid x grid) @ (grid x w), 20x faster than
    # interpolating at each of the h w pixels
    row_weights = linear_weights(rows, np.arange(height))
    col_weights = linear_weights(cols, np.arange(width))
    return (row_weights @ values @ col_weights.T).astype(np.float32)


def write_psf_header(
    image_path: str | Path,
    psf: PsfModel,
    *,
    hdu: int | str = 0,
    position: tuple[float, float] | None = None,
    beta: float = 3.5,
) -> float:
    """Write ``PSF_FWHM`` and ``PSF_BETA`` from a PSF model into one HDU of a FITS image.

    ``PSF_FWHM`` is :func:`fit_moffat_fwhm_arcsec` of ``psf.image(row, col)``: with
    ``PSF_BETA = beta`` it is the Moffat that ``bliss mode=predict`` assumes for this band.

    Args:
        image_path: the FITS file, updated in place.
        psf: the band's PSF model (a :class:`~bliss.surveys.psfex.PsfexPsf` or an ``SdssPsf``).
        hdu: index or ``EXTNAME`` of the image HDU [default: 0].
        position: 0-indexed ``(row, col)`` in the PSF model's image at which to evaluate it
            [default: the centre of the HDU's image; pass it for a cut-out of the modelled image].
        beta: Moffat index [default: 3.5].

    Returns:
        The FWHM written, arcsec.

    Raises:
        BlissIOError: the file is missing or not FITS, the HDU does not exist, or it holds no 2-D
            image and ``position`` is not given.
    """
    image_path = Path(image_path)
    try:
        with fits.open(image_path, mode="update", memmap=False) as hdus:
            try:
                target = hdus[hdu]
            except (KeyError, IndexError) as err:
                names = [h.name for h in hdus]
                raise BlissIOError(
                    f"{image_path} has no HDU {hdu!r} (HDUs {names}); pass hdu= an index or EXTNAME."
                ) from err
            if position is None:
                if target.data is None or np.ndim(target.data) != 2:
                    raise BlissIOError(
                        f"{image_path} HDU {hdu!r} holds no 2-D image; pass position=(row, col) at "
                        "which to evaluate the PSF."
                    )
                height, width = target.data.shape
                position = ((height - 1) / 2, (width - 1) / 2)
            fwhm = fit_moffat_fwhm_arcsec(psf.image(*position), psf.pixel_scale_arcsec, beta)
            target.header["PSF_FWHM"] = (
                round(fwhm, 4),
                "Moffat FWHM, arcsec (fit to the PSF model)",
            )
            target.header["PSF_BETA"] = (float(beta), "Moffat beta")
    except BlissError:
        raise
    except FileNotFoundError as err:
        raise BlissIOError(
            f"{image_path} does not exist; expected the FITS image to update."
        ) from err
    except OSError as err:
        raise BlissIOError(
            f"{image_path} could not be updated as a FITS file ({err}); check it is a writable FITS image."
        ) from err
    return fwhm


def add_halo(
    psf: np.ndarray,
    fraction: float,
    fwhm_arcsec: float,
    beta: float,
    pixel_scale_arcsec: float,
) -> np.ndarray:
    """``(1 - fraction) psf + fraction halo``: a PSF image with a broad Moffat halo added.

    PSF models fitted to a survey's stars (SDSS's psField KL PSFs) describe the core and leave out
    the faint, wide wings that real stars have; a halo carrying a few percent of the light puts
    them back, so that simulated stars look like real ones out to the stamp's edge.

    Args:
        psf: the PSF, sum 1, centred on its middle pixel. Shape ``h w``.
        fraction: share of the light in the halo, in [0, 1).
        fwhm_arcsec: the halo's FWHM.
        beta: the halo's Moffat index (> 1.1; ~2 for seeing halos).
        pixel_scale_arcsec: pixel side.

    Returns:
        The PSF with its halo, sum 1, same shape and dtype. The halo is drawn pixel-integrated
        on the same stamp and normalised there: its light beyond the stamp is not drawn.

    Raises:
        BlissValueError: ``fraction``, ``fwhm_arcsec`` or ``beta`` out of range.
    """
    if not 0.0 <= fraction < 1.0 or fwhm_arcsec <= 0 or beta <= 1.1:
        raise BlissValueError(
            f"PSF halo fraction={fraction}, fwhm_arcsec={fwhm_arcsec}, beta={beta}; expected a "
            "fraction in [0, 1), a positive FWHM and beta > 1.1."
        )
    height, width = psf.shape
    halo = _moffat_stamp(float(beta), float(fwhm_arcsec), width, height, float(pixel_scale_arcsec))
    core = np.asarray(psf, dtype=np.float64)
    mixed = (1.0 - fraction) * core / core.sum() + fraction * halo / halo.sum()
    return mixed.astype(psf.dtype)


@functools.lru_cache(maxsize=16)
def _moffat_stamp(
    beta: float, fwhm_arcsec: float, width: int, height: int, pixel_scale_arcsec: float
) -> np.ndarray:
    """A pixel-integrated Moffat on a ``height x width`` stamp (read-only, shared by callers).

    A frame's PSFs all get the same halo: drawing it once instead of at each of the hundred or
    so places where a frame's PSF is evaluated saves about 2 s per SDSS frame.
    """
    import galsim

    stamp = (
        galsim.Moffat(beta=beta, fwhm=fwhm_arcsec)
        .drawImage(nx=width, ny=height, scale=pixel_scale_arcsec)
        .array.astype(np.float64)
    )
    stamp.setflags(write=False)
    return stamp
