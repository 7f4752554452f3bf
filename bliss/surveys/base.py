"""The contract between surveys and the rest of bliss."""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from astropy.wcs import WCS

from bliss.errors import BlissValueError

__all__ = [
    "ImageSource",
    "ObservedConditions",
    "ObservingSetup",
    "PsfAndSky",
    "PsfModel",
    "SurveyImage",
    "psf_images_at",
]


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
        psf_fwhm_map: PSF FWHM at every pixel, arcsec, where the PSF varies over the image (the
            encoder then sees the local value), or None: ``psf_fwhm_arcsec`` everywhere.
            Shape ``c h w``.
        aperture_correction: per band, the factor by which fluxes measured against the image's
            PSF model fall short of the total (the light of real stars outside that model, e.g.
            :mod:`bliss.surveys.sdss.aperture`); the predictor multiplies its fluxes by it.
            None: 1. Shape ``c``.
    """

    path: Path
    bands: tuple[str, ...]
    images: np.ndarray
    background: np.ndarray
    psf_fwhm_arcsec: np.ndarray
    magzero: np.ndarray
    wcs: WCS | None
    psf_fwhm_map: np.ndarray | None = None
    aperture_correction: np.ndarray | None = None


@runtime_checkable
class ImageSource(Protocol):
    """A survey that reads its own images (e.g. SDSS frames by run / camcol / field)."""

    def load_image(self, bands: tuple[str, ...]) -> SurveyImage:
        """The image to catalog, in the given band order."""
        ...


@runtime_checkable
class PsfModel(Protocol):
    """A position-dependent PSF model of one band (``SdssPsf``, ``PsfexPsf``).

    Positions are 0-indexed ``(row, col)`` pixels of the frame the model was fitted on.
    """

    band: str
    pixel_scale_arcsec: float

    def image(self, row: float, col: float) -> np.ndarray:
        """The pixel-integrated PSF at ``(row, col)``, sum 1, centred on its middle pixel. Shape ``h w``."""
        ...

    def fwhm_arcsec(self, row: float, col: float, method: str = "effective") -> float:
        """FWHM of the PSF at ``(row, col)``, arcsec."""
        ...


def psf_images_at(
    psfs: Mapping[str, PsfModel], row: float, col: float, pixel_scale_arcsec: float
) -> dict[str, np.ndarray]:
    """PSF images for ``ImageSimulator(psf_images=...)``: each band's model at one position.

    Args:
        psfs: band -> PSF model.
        row: frame row at which every model is evaluated (0-indexed).
        col: frame column.
        pixel_scale_arcsec: the survey's pixel side, arcsec; the simulator takes the images at
            this scale, so every model must have it (within 1%).

    Returns:
        band -> PSF image, sum 1. Shape ``h w`` each.

    Raises:
        BlissValueError: a model's pixel scale differs from ``pixel_scale_arcsec``.
    """
    for band, psf in psfs.items():
        if not math.isclose(psf.pixel_scale_arcsec, pixel_scale_arcsec, rel_tol=0.01):
            raise BlissValueError(
                f"the {band}-band PSF model has pixel_scale_arcsec={psf.pixel_scale_arcsec} but the "
                f"survey has {pixel_scale_arcsec}; the simulator takes PSF images at the survey's "
                "pixel scale. Build the model with the survey's scale or use a survey preset for it."
            )
    return {band: psf.image(row, col) for band, psf in psfs.items()}


@dataclass(frozen=True)
class ObservedConditions:
    """PSFs and sky levels measured on real frames: a table for simulations to draw from.

    Each row is one place on one real frame; a simulated image takes one row, so its bands share
    a moment's seeing and sky as they do on the sky.

    Attributes:
        bands: band names, in channel order.
        psf_images: pixel-integrated PSF of each band, sum 1, at the survey's pixel scale.
            Shape ``n c h w``.
        psf_fwhm_arcsec: FWHM of the beta = 3.5 Moffat that fits each PSF (what a model trained
            on Moffat PSFs, and ``PSF_FWHM``, mean). Shape ``n c``.
        sky_electrons: sky per pixel there. Shape ``n c``.
        labels: where each row comes from, e.g. ``"94-1-12 r=744 c=1024"``.
    """

    bands: tuple[str, ...]
    psf_images: np.ndarray
    psf_fwhm_arcsec: np.ndarray
    sky_electrons: np.ndarray
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        n, c = self.psf_fwhm_arcsec.shape
        if (
            self.psf_images.ndim != 4
            or self.psf_images.shape[:2] != (n, c)
            or self.sky_electrons.shape != (n, c)
            or len(self.labels) != n
            or c != len(self.bands)
        ):
            raise BlissValueError(
                f"ObservedConditions: psf_images {self.psf_images.shape}, psf_fwhm_arcsec "
                f"{self.psf_fwhm_arcsec.shape}, sky_electrons {self.sky_electrons.shape}, "
                f"{len(self.labels)} labels, bands {self.bands}; expected n c h w, n c, n c, n "
                "and c bands."
            )
