"""The contracts every part of bliss speaks: a leaf module that imports only :mod:`bliss.errors`.

The simulator needs a PSF and a sky per band (:class:`PsfAndSky`); the prior and the predictor
also need zero points and a reference band (:class:`ObservingSetup`); predict reads images through
a :class:`Survey` and catalogs :class:`SurveyImage` s; a survey that finds its own images (SDSS
frames by run / camcol / field) is also an :class:`ImageSource`. A survey adapts itself to the
model that will catalog it (:meth:`Survey.for_model`) from the :class:`ModelConditions` recorded
at training time.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
from astropy.wcs import WCS

from bliss.errors import BlissValueError

__all__ = [
    "ImageSource",
    "InputName",
    "ModelConditions",
    "ObservedConditions",
    "ObservingSetup",
    "PsfAndSky",
    "PsfModel",
    "Survey",
    "SurveyImage",
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
        psf: the PSF model of the image, ``(band index, row, col) ->`` the pixel-integrated PSF
            at that 0-indexed pixel, sum 1, centred on its middle pixel (shape ``h w``, odd);
            the model that ``aperture_correction`` refers to. PSF-fit star photometry uses it
            (:mod:`bliss.predict.psf_photometry`). None: no model; a Moffat is fitted to the
            image's stars instead.
        saturated: pixels the instrument saturated (SDSS fpM ``SATUR``; a FITS band's
            ``SATURATE`` level), or None: not known. Sources on them get the ``saturated`` flag.
            Shape ``c h w`` (bool).
        psf_shape: the PSF's ``(e1, e2, rho4)`` per band (``bliss.simulator.psf_shape``; FITS
            cards ``PSF_E1``, ``PSF_E2``, ``PSF_RHO4``), or None: from ``psf`` where there is
            one, else a round Moffat's. Read by models trained with the PSF's shape. Shape
            ``c 3``.
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
    psf: Callable[[int, float, float], np.ndarray] | None = None
    saturated: np.ndarray | None = None
    psf_shape: np.ndarray | None = None


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


@dataclass(frozen=True)
class ModelConditions:
    """What a trained model assumes about its images, read from its checkpoint's config.

    Attributes:
        bands: the encoder's bands, in channel order.
        image_size_px: side of the training images (the predictor's default window).
        magzero: per band, the training survey's zero point (AB magnitude of one electron), or
            None when the checkpoint does not record one for every band.
        observed_psfs: whether the model was trained on PSFs measured on real frames
            (``simulator.conditions.observed``) rather than parametric ones; only then are a real
            frame's aperture corrections (measured against those PSFs) right for it.
        psf_halo: the Moffat halo added to those observed PSFs in training, or None.
        count_rate_per_tile: the training prior's Poisson mean number of sources per tile, where
            it is one constant (None for a prior whose density varies, like a cluster's).
        galaxy_fraction: the training prior's share of galaxies, where it is one constant
            (None otherwise).
    """

    bands: tuple[str, ...]
    image_size_px: int | None = None
    magzero: tuple[float, ...] | None = None
    observed_psfs: bool = False
    psf_halo: dict[str, Any] | None = field(default=None, hash=False)
    count_rate_per_tile: float | None = None
    galaxy_fraction: float | None = None


@dataclass(frozen=True)
class InputName:
    """One image a survey finds itself (e.g. an SDSS field), named for its output files.

    Attributes:
        name: stem of its output files, e.g. ``sdss-000094-1-0012``.
        label: how messages name it, e.g. the field and its folder.
        ids: what :meth:`ImageSource.for_field` takes to read it, e.g. ``(run, camcol, field)``.
    """

    name: str
    label: str
    ids: tuple[int, ...]


@runtime_checkable
class Survey(ObservingSetup, Protocol):
    """A survey as predict and evaluate see it: reads images and adapts itself to a model."""

    name: str

    def read_image(
        self, path: str | Path, bands: tuple[str, ...], *, sky: str = "included"
    ) -> SurveyImage:
        """Read a FITS file in the input contract, in the model's band order.

        ``sky`` says whether its pixels hold the sky (``"included"``) or not (``"subtracted"``:
        the reader adds a sky back, since images are cataloged with the sky included).
        """
        ...

    def for_model(self, model: ModelConditions) -> Self:
        """This survey as the model expects it (e.g. its training PSF's halo); may be ``self``."""
        ...


@runtime_checkable
class ImageSource(Survey, Protocol):
    """A survey that finds its own images (e.g. SDSS frames by run / camcol / field)."""

    def load_image(self, bands: tuple[str, ...]) -> SurveyImage:
        """The image to catalog, in the given band order."""
        ...

    def inputs(self) -> list[InputName]:
        """The images of a many-input run (e.g. ``survey.fields``), named; empty for one image."""
        ...

    def for_field(self, *ids: int) -> Self:
        """A copy that reads the image named by ``ids`` (an :attr:`InputName.ids`)."""
        ...
