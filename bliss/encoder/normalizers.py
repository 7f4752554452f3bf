"""Turn raw images into network inputs that work for faint and very bright sources alike."""

from collections.abc import Sequence

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from bliss.catalog.shapes import check_shape
from bliss.errors import BlissConfigError, BlissValueError

__all__ = ["ImageNormalizer", "saturation_levels"]


class ImageNormalizer(nn.Module):
    """Background-subtracted, variance-stabilised channels plus observing conditions.

    For each band, with ``s = (image - background) / sqrt(background)`` (the signal in units of
    the sky noise), the inputs are:

    * ``clamp(s, -clip, clip)`` if ``linear`` (faint sources, near-Gaussian noise);
    * ``asinh(s / asinh_softening)`` if ``asinh`` (bright sources: logarithmic, never saturates);
    * if ``psf_aware``: constant maps ``(fwhm - fwhm_center) / fwhm_spread`` (arcsec) and
      ``log(background / sky_center)`` per band, so one network serves images of any seeing/sky;
    * if ``psf_shape``: constant maps of the PSF's shape beyond its width per band (its
      ellipticity ``e1 / shape_spread``, ``e2 / shape_spread`` and wings
      ``(rho4 - rho4_center) / shape_spread``, :mod:`bliss.simulator.psf_shape`), so PSFs of one
      FWHM but other shapes are told apart.

    Missing pixels (NaN in the image) become 0 in every image channel (no signal). With
    ``saturation_electrons``, so do the pixels at or above a band's saturation level: a real
    detector reports those as missing (SDSS frames turn fpM ``SATUR`` pixels into NaN, and so does
    the FITS reader at a band's ``SATURATE``), so a model trained on simulated images that never
    saturate has never seen a bright star whose core is a hole. The images themselves (and the
    shards that hold them) keep every count.

    Args:
        n_bands: number of bands ``c``.
        linear: include the clipped linear channel [default: True].
        asinh: include the asinh channel [default: True].
        asinh_softening: softening of the asinh stretch, in sky-noise units [default: 3].
        clip: bound of the linear channel, in sky-noise units [default: 100].
        psf_aware: add PSF FWHM and sky level maps [default: True].
        fwhm_center: centring of the FWHM maps, arcsec.
        fwhm_spread: scaling of the FWHM maps, arcsec.
        sky_center: centring of the log-sky maps, electrons per pixel.
        psf_shape: add the PSF shape maps [default: False].
        rho4_center: centring of the wings map (a beta = 3.5 Moffat's ``rho4``).
        shape_spread: scaling of the shape maps (real seeing: ``|e| <~ 0.15``).
        saturation_electrons: per band, the count (electrons, sky included) at and above which
            a pixel is missing; ``None`` for a band, or for all, that never saturates
            [default: None].
    """

    def __init__(
        self,
        n_bands: int,
        linear: bool = True,
        asinh: bool = True,
        asinh_softening: float = 3.0,
        clip: float = 100.0,
        psf_aware: bool = True,
        fwhm_center: float = 1.4,
        fwhm_spread: float = 0.3,
        sky_center: float = 500.0,
        psf_shape: bool = False,
        rho4_center: float = 2.14,
        shape_spread: float = 0.1,
        saturation_electrons: Sequence[float | None] | None = None,
    ) -> None:
        super().__init__()
        if not (linear or asinh):
            raise BlissConfigError(
                "encoder.normalizer: linear and asinh are both false; enable one."
            )
        if min(asinh_softening, clip, fwhm_spread, sky_center, shape_spread) <= 0:
            raise BlissConfigError(
                "encoder.normalizer: asinh_softening, clip, fwhm_spread, sky_center and "
                "shape_spread must be > 0."
            )
        self.n_bands = n_bands
        self.linear = linear
        self.asinh = asinh
        self.asinh_softening = asinh_softening
        self.clip = clip
        self.psf_aware = psf_aware
        self.fwhm_center = fwhm_center
        self.fwhm_spread = fwhm_spread
        self.sky_center = sky_center
        self.psf_shape = psf_shape
        self.rho4_center = rho4_center
        self.shape_spread = shape_spread
        levels = saturation_levels(saturation_electrons, n_bands)
        self.saturates = bool(torch.isfinite(levels).any())
        self.register_buffer("saturation", levels, persistent=False)

    @property
    def n_channels(self) -> int:
        """Channels produced per image."""
        per_band = int(self.linear) + int(self.asinh) + 2 * int(self.psf_aware)
        return self.n_bands * (per_band + 3 * int(self.psf_shape))

    def forward(
        self,
        images: Tensor,
        background: Tensor,
        psf_fwhm_arcsec: Tensor,
        psf_shape: Tensor | None = None,
    ) -> Tensor:
        """Normalise a batch.

        Args:
            images: electrons, sky included. Shape ``b c h w``.
            background: sky, electrons per pixel: ``b c`` (flat) or ``b c h w`` (a map).
            psf_fwhm_arcsec: PSF FWHM per band, arcsec: ``b c`` (one per image) or ``b c h w``
                (a map, for a PSF that varies over the image; each pixel sees its local value).
            psf_shape: ``(e1, e2, rho4)`` of each band's PSF: ``b c 3``; needed with
                ``psf_shape`` set, ignored otherwise.

        Returns:
            Shape ``b f h w`` with ``f = n_channels``.

        Raises:
            BlissValueError: the normaliser reads the PSF shape and ``psf_shape`` is None.
        """
        sizes = check_shape("images", images, "b c h w", {"c": self.n_bands})
        if background.ndim == 2:
            check_shape("background", background, "b c", sizes)
            background = rearrange(background, "b c -> b c 1 1")
        else:
            check_shape("background", background, "b c h w", sizes)
        if psf_fwhm_arcsec.ndim == 2:
            check_shape("psf_fwhm_arcsec", psf_fwhm_arcsec, "b c", sizes)
            psf_fwhm_arcsec = rearrange(psf_fwhm_arcsec, "b c -> b c 1 1")
        else:
            check_shape("psf_fwhm_arcsec", psf_fwhm_arcsec, "b c h w", sizes)
        background = background.clamp(min=1e-3)
        signal = (images - background) / torch.sqrt(background)
        if self.saturates:
            saturated = images >= rearrange(self.saturation, "c -> 1 c 1 1").to(images)
            signal = signal.masked_fill(saturated, float("nan"))
        signal = torch.nan_to_num(signal, nan=0.0, posinf=0.0, neginf=0.0)
        channels = []
        if self.linear:
            channels.append(signal.clamp(-self.clip, self.clip))
        if self.asinh:
            channels.append(torch.asinh(signal / self.asinh_softening))
        if self.psf_aware:
            h, w = sizes["h"], sizes["w"]
            fwhm = (psf_fwhm_arcsec - self.fwhm_center) / self.fwhm_spread
            sky = torch.log(background.mean(dim=(-2, -1)) / self.sky_center)
            channels.append(fwhm.expand(-1, -1, h, w))
            channels.append(repeat(sky, "b c -> b c h w", h=h, w=w))
        if self.psf_shape:
            if psf_shape is None:
                raise BlissValueError(
                    "this model reads each band's PSF shape (encoder.normalizer.psf_shape=true) "
                    "but the batch has no `psf_shape` (b c 3); simulate it with this version of "
                    "bliss, or give the image's PSF."
                )
            check_shape("psf_shape", psf_shape, "b c three", {**sizes, "three": 3})
            center = psf_shape.new_tensor([0.0, 0.0, self.rho4_center])
            shape = (psf_shape - center) / self.shape_spread
            h, w = sizes["h"], sizes["w"]
            channels.append(repeat(shape, "b c k -> b (c k) h w", h=h, w=w))
        return torch.cat(channels, dim=1)


def saturation_levels(levels: Sequence[float | None] | None, n_bands: int) -> torch.Tensor:
    """Per-band saturation counts, ``inf`` where a band never saturates. Shape ``c``.

    Args:
        levels: one count per band (electrons, sky included), None for a band that never
            saturates; or None for none.
        n_bands: the number of bands ``c``.

    Raises:
        BlissConfigError: not ``n_bands`` levels, or a level that is not positive.

    Example:
        >>> saturation_levels([None, 2.5e5], 2)
        tensor([    inf, 250000.])
    """
    if levels is None:
        return torch.full((n_bands,), float("inf"))
    levels = list(levels)
    if len(levels) != n_bands or any(v is not None and not v > 0 for v in levels):
        raise BlissConfigError(
            f"encoder.normalizer.saturation_electrons={levels}; expected {n_bands} positive "
            "counts (electrons, sky included), one per band, or null for a band that never "
            "saturates."
        )
    return torch.tensor([float("inf") if v is None else float(v) for v in levels])
