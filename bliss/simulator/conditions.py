"""Per-image observing conditions: PSF width and sky level in every band."""

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor

from bliss.errors import BlissConfigError
from bliss.protocols import ObservedConditions, PsfAndSky

__all__ = ["ObservingConditions"]


class ObservingConditions:
    """Draw the seeing and the sky of each simulated image around a survey's nominal values.

    All bands of an image share one seeing factor and one sky factor, since both are set by the
    atmosphere and the moon at the time of the exposure; the survey's per-band ratios are kept.

    Args:
        survey: nominal PSF FWHM and sky per band.
        reference_fwhm_arcsec: ``[low, high]``: draw the reference band's FWHM uniformly in this
            range (arcsec) and scale the other bands by the survey's ratios. Exclusive with
            ``fwhm_scale``.
        fwhm_scale: ``[low, high]``: multiply every band's nominal FWHM by one uniform factor.
        sky_scale: ``[low, high]``: multiply every band's nominal sky by one uniform factor.
        reference_band: band that ``reference_fwhm_arcsec`` refers to.
        observed: conditions measured on real frames (e.g.
            :func:`bliss.surveys.sdss.conditions.sdss_observed_conditions`). Each image then
            takes the PSF images, FWHM and sky of one random row of the table instead of the
            survey's Moffat and nominal sky; ``fwhm_scale`` dilates that PSF (perturbing the real
            seeing) and ``sky_scale`` scales that sky. Exclusive with ``reference_fwhm_arcsec``.

    With all ranges ``None`` and no ``observed`` table every image has the survey's nominal
    conditions.
    """

    def __init__(
        self,
        survey: PsfAndSky,
        reference_band: str,
        reference_fwhm_arcsec: Sequence[float] | None = None,
        fwhm_scale: Sequence[float] | None = None,
        sky_scale: Sequence[float] | None = None,
        observed: ObservedConditions | None = None,
    ) -> None:
        if reference_fwhm_arcsec is not None and (fwhm_scale is not None or observed is not None):
            raise BlissConfigError(
                "simulator.conditions sets reference_fwhm_arcsec together with fwhm_scale or "
                "observed; the seeing comes from one of them, set reference_fwhm_arcsec to null."
            )
        if observed is not None and tuple(observed.bands) != tuple(survey.bands):
            raise BlissConfigError(
                f"simulator.conditions.observed has bands {list(observed.bands)}, the survey "
                f"{list(survey.bands)}; read the observed conditions for the survey's bands."
            )
        self.observed = observed
        self.bands = tuple(survey.bands)
        if reference_band not in self.bands:
            raise BlissConfigError(
                f"simulator.conditions.reference_band={reference_band!r} is not one of the "
                f"survey's bands {list(self.bands)}; use one of them (normally "
                "${survey.reference_band})."
            )
        self.nominal_fwhm = torch.tensor([survey.psf_fwhm_arcsec(b) for b in self.bands])
        self.nominal_sky = torch.tensor([survey.sky_electrons(b) for b in self.bands])
        self.reference_fwhm = _check_range("reference_fwhm_arcsec", reference_fwhm_arcsec)
        self.fwhm_scale = _check_range("fwhm_scale", fwhm_scale)
        self.sky_scale = _check_range("sky_scale", sky_scale)
        self.reference_index = self.bands.index(reference_band)

    def sample(self, n_images: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Draw conditions for ``n_images`` images.

        Returns:
            ``psf_fwhm_arcsec`` and ``sky_electrons``, each of shape ``b c``; with an
            ``observed`` table also ``psf_images`` (``b c h w``, each of sum 1) and
            ``psf_dilation`` (``b``), the factor by which to widen them (FWHM included), and
            ``observed_row`` (``b``), the table row each image took.
        """
        fwhm_factor = torch.ones(n_images)
        draw = torch.rand(n_images, 2, generator=generator)
        if self.reference_fwhm is not None:
            low, high = self.reference_fwhm
            target = low + (high - low) * draw[:, 0]
            fwhm_factor = target / self.nominal_fwhm[self.reference_index]
        elif self.fwhm_scale is not None:
            low, high = self.fwhm_scale
            fwhm_factor = low + (high - low) * draw[:, 0]
        sky_factor = torch.ones(n_images)
        if self.sky_scale is not None:
            low, high = self.sky_scale
            sky_factor = low + (high - low) * draw[:, 1]
        if self.observed is not None:
            rows = torch.randint(len(self.observed.labels), (n_images,), generator=generator)
            table = self.observed
            return {
                "psf_fwhm_arcsec": rearrange(fwhm_factor, "b -> b 1")
                * torch.from_numpy(table.psf_fwhm_arcsec[rows.numpy()]),
                "sky_electrons": rearrange(sky_factor, "b -> b 1")
                * torch.from_numpy(table.sky_electrons[rows.numpy()]),
                "psf_images": torch.from_numpy(table.psf_images[rows.numpy()]),
                "psf_dilation": fwhm_factor,
                "observed_row": rows,
            }
        return {
            "psf_fwhm_arcsec": rearrange(fwhm_factor, "b -> b 1") * self.nominal_fwhm,
            "sky_electrons": rearrange(sky_factor, "b -> b 1") * self.nominal_sky,
        }


def _check_range(key: str, bounds: Sequence[float] | None) -> tuple[float, float] | None:
    if bounds is None:
        return None
    if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1]:
        raise BlissConfigError(
            f"simulator.conditions.{key}={list(bounds)}; expected [low, high] with 0 < low <= high."
        )
    return float(bounds[0]), float(bounds[1])
