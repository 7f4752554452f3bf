"""``survey=sdss_frames``: the SDSS survey whose images are real frames read by run/camcol/field."""

from collections.abc import Mapping, Sequence
from pathlib import Path

from bliss.errors import BlissValueError
from bliss.surveys.base import SurveyImage
from bliss.surveys.parametric import ParametricSurvey
from bliss.surveys.sdss.frames import read_sdss_field

__all__ = ["SdssFrameSurvey"]


class SdssFrameSurvey(ParametricSurvey):
    """SDSS with real frames: the preset's numbers plus a field to read.

    Args:
        data_dir: directory laid out as ``<data_dir>/<run>/<camcol>/<field>/`` (photoField in
            ``<data_dir>/<run>/<camcol>/``), e.g. what :func:`download_sdss_field` writes.
        run: SDSS run.
        camcol: camera column (1-6).
        field: field number.
        mask_planes: fpM mask planes treated as missing data.
        **preset: the :class:`ParametricSurvey` arguments (bands, zero points, ...), used where a
            frame does not say (e.g. a model's nominal PSF).
    """

    def __init__(
        self,
        data_dir: str,
        run: int,
        camcol: int,
        field: int,
        mask_planes: Sequence[str] = ("INTERP", "SATUR", "CR"),
        **preset: str | float | Sequence[str] | Mapping[str, float],
    ) -> None:
        super().__init__(**preset)
        self.data_dir = Path(data_dir)
        self.run, self.camcol, self.field = int(run), int(camcol), int(field)
        self.mask_planes = tuple(mask_planes)

    def load_image(self, bands: tuple[str, ...]) -> SurveyImage:
        """Read the field, aligned to the reference band's pixel grid, in ``bands`` order.

        The PSF FWHM of each band is the psField PSF's at the frame centre; masked pixels are NaN.
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
        )
