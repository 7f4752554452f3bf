"""The multi-epoch Stripe 82 cut-out (``../shared/data/sdss_s82_multiepoch``) as bliss inputs.

One FITS file per band, ``stamp-<band>-<ra>-<dec>.fits``: for each epoch an image HDU in
nanomaggies, sky subtracted, then its inverse-variance HDU (0 where the epoch has no data). All
epochs and bands are resampled onto one TAN grid (0.396 arcsec/px). The image headers give
``RUN``, ``CAMCOL``, ``FIELD``, the calibration ``NMGY`` (nanomaggies per count), the sky ``SKY``
(counts at the centre), ``GAIN`` and the PSF as a mixture of three Gaussians, ``PSF_P0`` ..
``PSF_P17``: amplitudes, means (x, y) and covariances (xx, yy, xy) in pixels.

Noise: the electron scale is taken from the inverse variance, not from ``GAIN``. In the sky,
``var = k (sky + image)`` in nanomaggies with ``k`` the nanomaggies of one electron; the median
pixel variance over the sky gives ``k``. The header's ``GAIN`` and ``NMGY`` predict 10-15 % less
variance than the inverse-variance planes hold (they leave out the dark current and read noise and
the resampling), and a model told the smaller noise would report too narrow intervals.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from bliss.errors import BlissIOError
from bliss.protocols import SurveyImage
from bliss.surveys.moffat import psf_fwhm_arcsec
from bliss.surveys.wcs import celestial_wcs

__all__ = ["BANDS", "PIXEL_SCALE_ARCSEC", "Epoch", "mixture_psf", "read_epochs"]

BANDS = ("u", "g", "r", "i", "z")
PIXEL_SCALE_ARCSEC = 0.396
PSF_STAMP_PX = 25
_OVERSAMPLE = 5


@dataclass(frozen=True)
class Epoch:
    """One epoch of the cut-out.

    Attributes:
        run, camcol, field: the SDSS frame it was cut from.
        image: the five bands in electrons with the sky, NaN where the epoch has no data.
        nmgy_per_electron: per band, ``k`` above. Shape ``c``.
    """

    run: int
    camcol: int
    field: int
    image: SurveyImage
    nmgy_per_electron: np.ndarray


def mixture_psf(header: fits.Header, size: int = PSF_STAMP_PX) -> np.ndarray:
    """The header's three-Gaussian PSF, integrated over pixels, sum 1. Shape ``size size``.

    ``x`` runs along columns and ``y`` along rows; the means are offsets from the centre.
    """
    fine = size * _OVERSAMPLE
    # centres of the fine sub-pixels, in pixels from the stamp's centre
    axis = (np.arange(fine) + 0.5) / _OVERSAMPLE - size / 2
    y, x = np.meshgrid(axis, axis, indexing="ij")
    total = np.zeros((fine, fine))
    for k in range(3):
        amp = header[f"PSF_P{k}"]
        mx, my = header[f"PSF_P{3 + 2 * k}"], header[f"PSF_P{4 + 2 * k}"]
        xx, yy, xy = (header[f"PSF_P{9 + 3 * k + j}"] for j in range(3))
        det = xx * yy - xy**2
        if not (xx > 0 and det > 0):
            raise BlissIOError(
                f"PSF component {k} has covariance xx={xx}, yy={yy}, xy={xy}; expected a positive "
                "definite matrix (PSF_P9..PSF_P17)."
            )
        dx, dy = x - mx, y - my
        quad = (yy * dx**2 - 2 * xy * dx * dy + xx * dy**2) / det
        total += amp * np.exp(-0.5 * quad) / (2 * math.pi * math.sqrt(det))
    binned = total.reshape(size, _OVERSAMPLE, size, _OVERSAMPLE).sum(axis=(1, 3))
    return binned / binned.sum()


def _stamp_path(directory: Path, band: str) -> Path:
    found = sorted(directory.glob(f"stamp-{band}-*.fits"))
    if len(found) != 1:
        raise BlissIOError(
            f"{directory}: {len(found)} files match stamp-{band}-*.fits; expected one per band "
            f"({', '.join(BANDS)})."
        )
    return found[0]


def read_epochs(directory: str | Path) -> list[Epoch]:
    """Every epoch of the cut-out in ``directory``, in file order.

    Raises:
        BlissIOError: a band's file is missing or doubled, the bands hold different numbers of
            epochs, or an epoch's bands come from different frames.
    """
    directory = Path(directory)
    hdus = {band: fits.open(_stamp_path(directory, band), memmap=False) for band in BANDS}
    try:
        counts = {band: len(h) for band, h in hdus.items()}
        if len(set(counts.values())) != 1 or counts["r"] % 2:
            raise BlissIOError(
                f"{directory}: HDU counts per band {counts}; expected the same even number "
                "(an image and an inverse-variance HDU per epoch) in every band."
            )
        return [_epoch(hdus, e, directory) for e in range(counts["r"] // 2)]
    finally:
        for h in hdus.values():
            h.close()


def _epoch(hdus: dict[str, fits.HDUList], e: int, directory: Path) -> Epoch:
    images, backgrounds, magzero, fwhm, per_electron, psfs = [], [], [], [], [], []
    frame = None
    for band in BANDS:
        header = hdus[band][2 * e].header
        this = (header["RUN"], header["CAMCOL"], header["FIELD"])
        if frame is None:
            frame = this
        elif this != frame:
            raise BlissIOError(
                f"{directory}: epoch {e} is frame {frame} in u but {this} in {band}; expected "
                "every band's HDUs in the same epoch order."
            )
        nmgy = np.asarray(hdus[band][2 * e].data, dtype=np.float64)
        ivar = np.asarray(hdus[band][2 * e + 1].data, dtype=np.float64)
        observed = ivar > 0
        sky_nmgy = header["SKY"] * header["NMGY"]
        k = float(np.median(1.0 / ivar[observed])) / sky_nmgy
        electrons = np.where(observed, (nmgy + sky_nmgy) / k, np.nan)
        images.append(electrons.astype(np.float32))
        backgrounds.append(np.full(nmgy.shape, sky_nmgy / k, np.float32))
        magzero.append(22.5 - 2.5 * math.log10(k))
        per_electron.append(k)
        psf = mixture_psf(header)
        psfs.append(psf)
        fwhm.append(psf_fwhm_arcsec(psf, PIXEL_SCALE_ARCSEC, method="moffat"))
    reference = hdus["r"][2 * e].header
    stack = np.stack(psfs)
    image = SurveyImage(
        path=directory,
        bands=BANDS,
        images=np.stack(images),
        background=np.stack(backgrounds),
        psf_fwhm_arcsec=np.array(fwhm, dtype=np.float32),
        magzero=np.array(magzero),
        wcs=celestial_wcs(reference),
        psf=lambda band, row, col: stack[band],
    )
    return Epoch(*frame, image, np.array(per_electron))
