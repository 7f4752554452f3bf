"""Moffat equivalents of PSF models, and writing them as the ``PSF_FWHM`` / ``PSF_BETA`` cards.

``bliss mode=predict`` describes each band's PSF by a circular Moffat (``PSF_FWHM`` in arcsec and
``PSF_BETA``, see :mod:`bliss.predict.reader`). These functions turn a PSF image or model (a
:class:`~bliss.surveys.psfex.PsfexPsf`, an ``SdssPsf``, a stack of stars) into that Moffat.
"""

from pathlib import Path

import galsim
import numpy as np
from astropy.io import fits
from scipy import optimize

from bliss.errors import BlissError, BlissIOError, BlissValueError
from bliss.surveys.base import PsfModel

__all__ = ["fit_moffat_fwhm_arcsec", "write_psf_header"]


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

    def residual(fwhm_px: float) -> float:
        moffat = galsim.Moffat(beta=beta, fwhm=fwhm_px).drawImage(nx=width, ny=height, scale=1.0)
        model = moffat.array / moffat.array.sum()
        return float(np.sum((psf - model) ** 2))

    result = optimize.minimize_scalar(
        residual, bounds=(0.5, float(min(height, width))), method="bounded", options={"xatol": 1e-4}
    )
    return float(result.x * pixel_scale_arcsec)


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
