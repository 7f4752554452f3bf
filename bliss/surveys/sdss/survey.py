"""``survey=sdss_frames``: the SDSS survey whose images are real frames read by run/camcol/field."""

import copy
import functools
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import numpy as np

from bliss.errors import BlissConfigError, BlissValueError, BlissWarning
from bliss.protocols import InputName, ModelConditions, SurveyImage
from bliss.surveys.moffat import add_halo
from bliss.surveys.parametric import ParametricSurvey
from bliss.surveys.sdss.aperture import MIN_STARS, aperture_correction
from bliss.surveys.sdss.frames import SdssField, read_sdss_field

__all__ = ["SdssFrameSurvey"]


class SdssFrameSurvey(ParametricSurvey):
    """SDSS with real frames: the preset's numbers plus a field to read.

    Args:
        data_dir: directory laid out as ``<data_dir>/<run>/<camcol>/<field>/`` (photoField in
            ``<data_dir>/<run>/<camcol>/``), e.g. what :func:`download_sdss_field` writes.
        run: SDSS run.
        camcol: camera column (1-6).
        field: field number.
        fields: several fields to catalog, ``[[run, camcol, field], ...]``; ``mode=predict``
            then writes one catalog per field (see :meth:`for_field`) and ``run`` / ``camcol`` /
            ``field`` are unused [default: None, the one field above].
        mask_planes: fpM mask planes treated as missing data.
        psf_grid: places per side at which the psField PSF's FWHM is fitted to make the FWHM map
            the encoder sees (each pixel its local seeing); 1: one value per band, at the centre.
        aperture_correction: measure each band's aperture correction on the frame's own stars
            (:mod:`bliss.surveys.sdss.aperture`) and apply it to the fluxes, as PHOTO does for
            ``psfMag``; models trained on psField PSFs miss the light of real stars' wings.
        psf_halo: ``{fraction, fwhm_arcsec, beta}`` of the halo the model's training PSFs had
            (:func:`bliss.surveys.moffat.add_halo`); the aperture correction is then measured
            against the psField PSF with that halo. :meth:`for_model` sets it from the model's
            training config (``simulator.conditions.observed.halo``) when it is null.
        **preset: the :class:`ParametricSurvey` arguments (bands, zero points, ...), used where a
            frame does not say (e.g. a model's nominal PSF).
    """

    def __init__(
        self,
        data_dir: str,
        run: int,
        camcol: int,
        field: int,
        fields: Sequence[Sequence[int]] | None = None,
        mask_planes: Sequence[str] = ("INTERP", "SATUR", "CR"),
        psf_grid: int = 5,
        aperture_correction: bool = True,
        psf_halo: Mapping[str, float] | None = None,
        **preset: str | float | Sequence[str] | Mapping[str, float],
    ) -> None:
        super().__init__(**preset)
        self.data_dir = Path(data_dir)
        self.run, self.camcol, self.field = int(run), int(camcol), int(field)
        self.fields = None if fields is None else [_field_ids(i, f) for i, f in enumerate(fields)]
        self.mask_planes = tuple(mask_planes)
        if int(psf_grid) < 1:
            raise BlissConfigError(
                f"survey.psf_grid={psf_grid}; expected places per side >= 1 (1: one FWHM per band)."
            )
        self.psf_grid = int(psf_grid)
        self.aperture_correction = bool(aperture_correction)
        self.psf_halo = None if psf_halo is None else dict(psf_halo)

    def for_model(self, model: ModelConditions) -> Self:
        """A copy whose aperture corrections are measured against the model's training PSFs.

        A model trained on psField PSFs with a halo gets that halo in :attr:`psf_halo` (unless
        set); a model trained on parametric PSFs takes no aperture correction, so none is
        measured.
        """
        adapted = copy.copy(self)
        if model.psf_halo is not None and adapted.psf_halo is None:
            adapted.psf_halo = dict(model.psf_halo)
        if not model.observed_psfs:
            adapted.aperture_correction = False
        return adapted

    def inputs(self) -> list[InputName]:
        """The fields of ``survey.fields`` (repeats once), named ``sdss-<run6>-<camcol>-<field4>``."""
        return [
            InputName(
                f"sdss-{run:06d}-{camcol}-{field:04d}",
                f"SDSS run {run} camcol {camcol} field {field} "
                f"({self.data_dir}/{run}/{camcol}/{field})",
                (run, camcol, field),
            )
            for run, camcol, field in dict.fromkeys(self.fields or [])
        ]

    def for_field(self, run: int, camcol: int, field: int) -> Self:
        """A copy of this survey that reads the field ``run`` / ``camcol`` / ``field``."""
        one = copy.copy(self)
        one.run, one.camcol, one.field, one.fields = int(run), int(camcol), int(field), None
        return one

    def load_image(self, bands: tuple[str, ...]) -> SurveyImage:
        """Read the field, aligned to the reference band's pixel grid, in ``bands`` order.

        The PSF FWHM of each band is that of the Moffat fitting the psField PSF at the frame centre,
        and with ``psf_grid`` > 1 also a map of it over the frame; masked pixels are NaN. The
        image's PSF model is the psField PSF with the model's halo (the PSF the aperture
        correction is measured against).
        """
        unknown = [b for b in bands if b not in self.bands]
        if unknown:
            raise BlissValueError(f"bands {unknown} are not SDSS bands {list(self.bands)}.")
        field = read_sdss_field(
            self.data_dir,
            self.run,
            self.camcol,
            self.field,
            bands=tuple(bands),
            align_to=self.reference_band,
            mask_planes=self.mask_planes,
        )
        path = self.data_dir / str(self.run) / str(self.camcol) / str(self.field)
        return SurveyImage(
            path=path,
            bands=tuple(bands),
            images=field.images,
            background=field.background,
            psf_fwhm_arcsec=field.psf_fwhm_arcsec().astype("float32"),
            magzero=field.magzero,
            wcs=field.wcs,
            psf_fwhm_map=field.psf_fwhm_map(self.psf_grid) if self.psf_grid > 1 else None,
            aperture_correction=self._aperture_corrections(field)
            if self.aperture_correction
            else None,
            psf=functools.partial(self._band_psf, field.geometry(), tuple(bands)),
            saturated=field.saturated,
        )

    def _aperture_corrections(self, field: SdssField) -> np.ndarray:
        """Each band's aperture correction, measured on the field's stars. Shape ``c``."""
        corrections = [
            aperture_correction(
                frame.electrons,
                frame.sky,
                lambda row, col, band=band: self._model_psf(field, band, row, col),
                self.pixel_scale_arcsec,
            )
            for band, frame in field.frames.items()
        ]
        short = [
            f"{band} ({c.n_stars})"
            for band, c in zip(field.bands, corrections, strict=True)
            if c.n_stars < MIN_STARS
        ]
        if short:
            warnings.warn(
                f"SDSS field {self.run}-{self.camcol}-{self.field}: too few stars for an aperture "
                f"correction in bands {', '.join(short)} (bright, isolated and unmasked; "
                f"{MIN_STARS} needed); fluxes in those bands are not corrected.",
                BlissWarning,
                stacklevel=3,
            )
        return np.array([c.factor for c in corrections])

    def _band_psf(
        self, field: SdssField, bands: tuple[str, ...], index: int, row: float, col: float
    ) -> np.ndarray:
        """:meth:`_model_psf` of band ``bands[index]``: the ``SurveyImage.psf`` of a frame."""
        return self._model_psf(field, bands[index], row, col)

    def _model_psf(self, field: SdssField, band: str, row: float, col: float) -> np.ndarray:
        """The PSF the model was trained on at a pixel: the psField PSF, with its halo if any."""
        psf = field.psf_image(band, row, col)
        if self.psf_halo is None:
            return psf
        return add_halo(psf, pixel_scale_arcsec=self.pixel_scale_arcsec, **self.psf_halo)


def _field_ids(position: int, ids: Sequence[int]) -> tuple[int, int, int]:
    """``[run, camcol, field]`` of ``survey.fields[position]`` as three integers."""
    values = list(ids) if isinstance(ids, Sequence) and not isinstance(ids, str) else [ids]
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise BlissConfigError(
            f"survey.fields[{position}]={values}; expected [run, camcol, field] as three integers, "
            "e.g. survey.fields=[[94,1,12],[94,1,13]]."
        )
    return values[0], values[1], values[2]
