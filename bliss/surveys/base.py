"""The contract between surveys and the rest of bliss."""

from typing import Protocol, runtime_checkable

__all__ = ["ObservingSetup", "PsfAndSky"]


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
