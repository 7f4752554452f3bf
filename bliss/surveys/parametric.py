"""Surveys described by a few numbers per band (the ``survey=sdss|des|lsst`` presets)."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from bliss.errors import BlissConfigError
from bliss.protocols import ModelConditions, SurveyImage

__all__ = ["ParametricSurvey"]


class ParametricSurvey:
    """A survey with a Moffat PSF, a flat sky and a zero point per band.

    Args:
        name: survey name, e.g. ``"sdss"``.
        bands: band names in channel order.
        reference_band: band used for source ordering, magnitude bins and detection.
        pixel_scale_arcsec: pixel side in arcsec.
        psf_beta: Moffat beta shared by all bands.
        psf_fwhm_arcsec: PSF FWHM per band, arcsec.
        sky_electrons: sky level per band, electrons per pixel.
        magzero: AB magnitude of one electron per band.

    Raises:
        BlissConfigError: a per-band mapping does not have exactly the survey's bands, or a value
            is not positive.

    Example:
        >>> sdss = ParametricSurvey("sdss", ["u", "g", "r", "i", "z"], "r", 0.396, 3.5,
        ...     {"u": 1.5, "g": 1.4, "r": 1.3, "i": 1.25, "z": 1.25},
        ...     {"u": 40, "g": 254, "r": 620, "i": 977, "z": 639},
        ...     {"u": 28.01, "g": 29.82, "r": 29.89, "i": 29.69, "z": 27.93})
        >>> sdss.band_index("r")
        2
    """

    def __init__(
        self,
        name: str,
        bands: Sequence[str],
        reference_band: str,
        pixel_scale_arcsec: float,
        psf_beta: float,
        psf_fwhm_arcsec: Mapping[str, float],
        sky_electrons: Mapping[str, float],
        magzero: Mapping[str, float],
    ) -> None:
        self.name = name
        self.bands = tuple(bands)
        if len(set(self.bands)) != len(self.bands) or not self.bands:
            raise BlissConfigError(f"survey.bands={list(bands)}: expected distinct band names.")
        if reference_band not in self.bands:
            raise BlissConfigError(
                f"survey.reference_band={reference_band!r} is not one of survey.bands={list(bands)}."
            )
        _require_positive("survey.pixel_scale_arcsec", pixel_scale_arcsec)
        _require_positive("survey.psf_beta", psf_beta)
        self.reference_band = reference_band
        self.pixel_scale_arcsec = float(pixel_scale_arcsec)
        self.psf_beta = float(psf_beta)
        self._fwhm = self._per_band("survey.psf_fwhm_arcsec", psf_fwhm_arcsec, positive=True)
        self._sky = self._per_band("survey.sky_electrons", sky_electrons, positive=True)
        self._magzero = self._per_band("survey.magzero", magzero, positive=False)

    def _per_band(
        self, key: str, values: Mapping[str, float], *, positive: bool
    ) -> dict[str, float]:
        if set(values) != set(self.bands):
            raise BlissConfigError(
                f"{key} has bands {sorted(values)}, expected exactly survey.bands={list(self.bands)}; "
                "give one value per band."
            )
        if positive:
            for band, value in values.items():
                _require_positive(f"{key}.{band}", value)
        return {band: float(values[band]) for band in self.bands}

    @property
    def n_bands(self) -> int:
        """Number of bands ``c``."""
        return len(self.bands)

    @property
    def reference_index(self) -> int:
        """Channel index of the reference band."""
        return self.bands.index(self.reference_band)

    def band_index(self, band: str) -> int:
        """Channel index of ``band``."""
        return self.bands.index(band)

    def read_image(
        self, path: str | Path, bands: tuple[str, ...] | None = None, *, sky: str = "included"
    ) -> SurveyImage:
        """Read a FITS file in the input contract (:mod:`bliss.surveys.fits_reader`).

        Args:
            path: the FITS file.
            bands: the model's bands, in its channel order [default: the survey's].
            sky: ``"included"`` or ``"subtracted"``: whether the pixels still hold the sky
                (``predict.sky``) [default: ``"included"``].
        """
        from bliss.surveys.fits_reader import read_fits_image

        return read_fits_image(path, self, bands, sky=sky)

    def for_model(self, model: ModelConditions) -> Self:
        """This survey for a model: a parametric survey has nothing to adapt, so ``self``."""
        return self

    def psf_fwhm_arcsec(self, band: str) -> float:
        """PSF FWHM in ``band``, arcsec."""
        return self._fwhm[band]

    def sky_electrons(self, band: str) -> float:
        """Sky level in ``band``, electrons per pixel."""
        return self._sky[band]

    def magzero(self, band: str) -> float:
        """AB magnitude of one electron in ``band``."""
        return self._magzero[band]

    def __repr__(self) -> str:
        """Name, bands and pixel scale."""
        return f"ParametricSurvey({self.name!r}, bands={self.bands}, {self.pixel_scale_arcsec} arcsec/px)"


def _require_positive(key: str, value: float) -> None:
    if not value > 0:
        raise BlissConfigError(f"{key}={value}; expected a positive number.")
