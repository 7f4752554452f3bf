"""Per-image observing conditions: PSF width, PSF shape and sky level in every band."""

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from bliss.errors import BlissConfigError
from bliss.protocols import ObservedConditions, PsfAndSky
from bliss.simulator.psf_shape import psf_shape
from bliss.simulator.render import moffat_psf

__all__ = ["ObservingConditions"]

_PARAMETRIC_KEYS = ("fwhm_arcsec", "beta", "max_ellipticity", "stamp_px")


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

        parametric_psf: ``{fwhm_arcsec: [low, high], beta: [low, high], max_ellipticity: e,
            stamp_px: n}``: images take an elliptical Moffat PSF whose reference-band FWHM
            (other bands by the survey's ratios), index ``beta`` and distortion ``(e1, e2)``
            (uniform in the disc ``|e| <= e``) are drawn per image and shared by its bands,
            rendered pixel-integrated on an ``n x n`` stamp (default 51, or the ``observed``
            table's size). With ``observed`` too, an image takes a table row with probability
            ``observed_fraction`` and a parametric PSF otherwise.
        observed_fraction: see ``parametric_psf`` [default: 0.5].
        fwhm_gradient: largest change of the PSF FWHM across an image, as a fraction of its
            value at the centre: each image draws a size uniformly in ``[0, fwhm_gradient]`` and a
            random direction, and the PSF at a place is the image's PSF dilated by
            ``1 + gradient . (place - centre) / image side`` (a linear variation, as of survey
            PSF models over a frame) [default: none, one PSF per image].

    With all ranges ``None`` and no ``observed`` table or ``parametric_psf`` every image has the
    survey's nominal conditions. Images with PSF images (observed or parametric) also get their
    shape descriptors (:func:`bliss.simulator.psf_shape.psf_shape`).
    """

    def __init__(
        self,
        survey: PsfAndSky,
        reference_band: str,
        reference_fwhm_arcsec: Sequence[float] | None = None,
        fwhm_scale: Sequence[float] | None = None,
        sky_scale: Sequence[float] | None = None,
        observed: ObservedConditions | None = None,
        parametric_psf: Mapping[str, object] | None = None,
        observed_fraction: float = 0.5,
        fwhm_gradient: float | None = None,
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
        self.pixel_scale = float(survey.pixel_scale_arcsec)
        self.parametric = _check_parametric(parametric_psf, observed)
        if not 0.0 <= observed_fraction <= 1.0:
            raise BlissConfigError(
                f"simulator.conditions.observed_fraction={observed_fraction}; expected a share "
                "in [0, 1]."
            )
        self.observed_fraction = observed_fraction if self.parametric is not None else 1.0
        if fwhm_gradient is not None and not 0.0 <= fwhm_gradient < 1.0:
            raise BlissConfigError(
                f"simulator.conditions.fwhm_gradient={fwhm_gradient}; expected a fraction in "
                "[0, 1) (the PSF's FWHM would reach zero at an image edge)."
            )
        self.fwhm_gradient = fwhm_gradient
        # a row's shape does not change when it is dilated: measured once per row and band
        self.observed_shape = (
            None if observed is None else torch.from_numpy(psf_shape(observed.psf_images))
        )

    def sample(self, n_images: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Draw conditions for ``n_images`` images.

        Returns:
            ``psf_fwhm_arcsec`` and ``sky_electrons``, each of shape ``b c``; with an
            ``observed`` table or ``parametric_psf`` also ``psf_images`` (``b c h w``, each of
            sum 1), ``psf_dilation`` (``b``), the factor by which to widen them (FWHM
            included), ``observed_row`` (``b``), the table row each image took (-1: a
            parametric PSF), and ``psf_shape`` (``b c 3``, see
            :mod:`bliss.simulator.psf_shape`); with ``fwhm_gradient`` also
            ``psf_fwhm_gradient`` (``b 2``), the change of the FWHM per image side along rows
            and columns, as a fraction of the values above (those at the image's centre).
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
        if self.observed is not None or self.parametric is not None:
            out = self._with_psf_images(n_images, fwhm_factor, sky_factor, generator)
        else:
            out = {
                "psf_fwhm_arcsec": rearrange(fwhm_factor, "b -> b 1") * self.nominal_fwhm,
                "sky_electrons": rearrange(sky_factor, "b -> b 1") * self.nominal_sky,
            }
        if self.fwhm_gradient is not None:
            size, angle = torch.rand(n_images, 2, generator=generator).unbind(-1)
            size = size * self.fwhm_gradient
            angle = angle * 2 * math.pi
            out["psf_fwhm_gradient"] = torch.stack(
                [size * torch.sin(angle), size * torch.cos(angle)], dim=-1
            )
        return out

    def _with_psf_images(
        self, n_images: int, fwhm_factor: Tensor, sky_factor: Tensor, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Conditions of images that carry PSF images: observed rows and parametric Moffats."""
        table = self.observed
        if self.parametric is None:  # observed rows only (the draws of earlier versions)
            observed = torch.ones(n_images, dtype=torch.bool)
        elif table is None:
            observed = torch.zeros(n_images, dtype=torch.bool)
        else:
            observed = torch.rand(n_images, generator=generator) < self.observed_fraction
        rows = torch.full((n_images,), -1, dtype=torch.long)
        if table is not None:
            drawn = torch.randint(len(table.labels), (n_images,), generator=generator)
            rows = torch.where(observed, drawn, rows)
        stamp = self.parametric["stamp_px"] if table is None else table.psf_images.shape[-1]
        # the table's dtypes (float32 from psField files): draws equal those of earlier versions
        image_type = torch.float64 if table is None else _dtype(table.psf_images)
        fwhm_type = torch.float64 if table is None else _dtype(table.psf_fwhm_arcsec)
        sky_type = torch.float64 if table is None else _dtype(table.sky_electrons)
        images = torch.zeros(n_images, len(self.bands), stamp, stamp, dtype=image_type)
        fwhm = torch.zeros(n_images, len(self.bands), dtype=fwhm_type)
        sky = (rearrange(sky_factor, "b -> b 1") * self.nominal_sky).to(sky_type)
        shape = torch.zeros(n_images, len(self.bands), 3)
        dilation = torch.where(observed, fwhm_factor, torch.ones(n_images))
        if table is not None and observed.any():
            index = rows[observed].numpy()
            factor = rearrange(fwhm_factor[observed], "b -> b 1")
            images[observed] = torch.from_numpy(table.psf_images[index])
            fwhm[observed] = (factor * torch.from_numpy(table.psf_fwhm_arcsec[index])).to(fwhm_type)
            sky[observed] = (
                rearrange(sky_factor[observed], "b -> b 1")
                * torch.from_numpy(table.sky_electrons[index])
            ).to(sky_type)
            shape[observed] = self.observed_shape[rows[observed]]
        parametric = ~observed
        if parametric.any():
            drawn = self._parametric(int(parametric.sum()), stamp, generator)
            images[parametric] = drawn[0].to(image_type)
            fwhm[parametric] = drawn[1].to(fwhm_type)
            shape[parametric] = drawn[2]
        return {
            "psf_fwhm_arcsec": fwhm,
            "sky_electrons": sky,
            "psf_images": images,
            "psf_dilation": dilation,
            "observed_row": rows,
            "psf_shape": shape,
        }

    def _parametric(
        self, n_images: int, stamp: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Elliptical Moffat PSF images (``b c h w``), their FWHM (``b c``) and shapes (``b c 3``)."""
        draw = torch.rand(n_images, 4, generator=generator).double().numpy()
        low, high = self.parametric["fwhm_arcsec"]
        reference = low + (high - low) * draw[:, 0]
        ratios = (self.nominal_fwhm / self.nominal_fwhm[self.reference_index]).double().numpy()
        fwhm = reference[:, None] * ratios[None, :]
        beta_low, beta_high = self.parametric["beta"]
        beta = beta_low + (beta_high - beta_low) * draw[:, 1]
        radius = self.parametric["max_ellipticity"] * np.sqrt(draw[:, 2])
        angle = 2 * math.pi * draw[:, 3]
        images = np.zeros((n_images, len(self.bands), stamp, stamp))
        for index in range(n_images):
            e1, e2 = radius[index] * math.cos(angle[index]), radius[index] * math.sin(angle[index])
            for band in range(len(self.bands)):
                profile = moffat_psf(float(fwhm[index, band]), float(beta[index]))
                drawn = profile.shear(e1=e1, e2=e2).drawImage(
                    nx=stamp, ny=stamp, scale=self.pixel_scale
                )
                images[index, band] = drawn.array / drawn.array.sum()
        shape = psf_shape(images, self.pixel_scale)
        return torch.from_numpy(images), torch.from_numpy(fwhm), torch.from_numpy(shape)


def _dtype(array: np.ndarray) -> torch.dtype:
    return torch.from_numpy(np.asarray(array)[:0]).dtype


def _check_parametric(
    spec: Mapping[str, object] | None, observed: ObservedConditions | None
) -> dict[str, object] | None:
    """``parametric_psf`` with its defaults, checked."""
    if spec is None:
        return None
    unknown = sorted(set(spec) - set(_PARAMETRIC_KEYS))
    if unknown:
        raise BlissConfigError(
            f"simulator.conditions.parametric_psf has unknown keys {unknown}; expected "
            f"{list(_PARAMETRIC_KEYS)}."
        )
    for key in ("fwhm_arcsec", "beta"):
        if key not in spec:
            raise BlissConfigError(
                f"simulator.conditions.parametric_psf.{key} is missing; expected [low, high]."
            )
    fwhm = _check_range("parametric_psf.fwhm_arcsec", spec["fwhm_arcsec"])
    beta = _check_range("parametric_psf.beta", spec["beta"])
    if beta[0] <= 1.1:
        raise BlissConfigError(
            f"simulator.conditions.parametric_psf.beta={list(beta)}; GalSim's Moffat needs "
            "beta > 1.1 (typical seeing: 2.5-5)."
        )
    max_e = float(spec.get("max_ellipticity", 0.0))
    if not 0.0 <= max_e < 1.0:
        raise BlissConfigError(
            f"simulator.conditions.parametric_psf.max_ellipticity={max_e}; expected a "
            "distortion in [0, 1) (real seeing: below ~0.2)."
        )
    stamp = int(spec.get("stamp_px", 51))
    if observed is None and (stamp < 5 or stamp % 2 == 0):
        raise BlissConfigError(
            f"simulator.conditions.parametric_psf.stamp_px={stamp}; expected an odd size >= 5."
        )
    return {"fwhm_arcsec": fwhm, "beta": beta, "max_ellipticity": max_e, "stamp_px": stamp}


def _check_range(key: str, bounds: Sequence[float] | None) -> tuple[float, float] | None:
    if bounds is None:
        return None
    if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1]:
        raise BlissConfigError(
            f"simulator.conditions.{key}={list(bounds)}; expected [low, high] with 0 < low <= high."
        )
    return float(bounds[0]), float(bounds[1])
