"""The contract between surveys and the rest of bliss."""

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from astropy.wcs import WCS

__all__ = ["ImageSource", "ObservingSetup", "PsfAndSky", "SurveyImage"]


@runtime_checkable
class PsfAndSky(Protocol):
    """What the simulator needs from a survey: a PSF and a sky level per band.

    Units: FWHM in arcsec; sky in electrons per pixel.
    """

    bands: tuple[str, ...]
    pixel_scale_arcsec: float
    psf_beta: float

    def psf_fwhm_arcsec(self, band: str) -> float:
        """FWHM of the (Moffat) PSF in ``band``, arcsec."""
        ...

    def sky_electrons(self, band: str) -> float:
        """Mean sky level in ``band``, electrons per pixel."""
        ...


@runtime_checkable
class ObservingSetup(PsfAndSky, Protocol):
    """A survey as the predictor and the prior see it: bands, zero points and a reference band."""

    reference_band: str

    def magzero(self, band: str) -> float:
        """AB magnitude of one electron in ``band``."""
        ...


@dataclass
class SurveyImage:
    """A multi-band image ready for the encoder.

    Attributes:
        path: the file it came from.
        bands: band names in channel order.
        images: electrons, sky included, NaN where missing. Shape ``c h w``.
        background: sky, electrons per pixel. Shape ``c h w``.
        psf_fwhm_arcsec: PSF FWHM per band. Shape ``c``.
        magzero: AB magnitude of one electron per band. Shape ``c``.
        wcs: celestial WCS of the reference band, or None.
    """

    path: Path
    bands: tuple[str, ...]
    images: np.ndarray
    background: np.ndarray
    psf_fwhm_arcsec: np.ndarray
    magzero: np.ndarray
    wcs: WCS | None


@runtime_checkable
class ImageSource(Protocol):
    """A survey that reads its own images (e.g. SDSS frames by run / camcol / field)."""

    def load_image(self, bands: tuple[str, ...]) -> SurveyImage:
        """The image to catalog, in the given band order."""
        ...
