"""Turn raw images into network inputs that work for faint and very bright sources alike."""

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from bliss.catalog.shapes import check_shape
from bliss.errors import BlissConfigError

__all__ = ["ImageNormalizer"]


class ImageNormalizer(nn.Module):
    """Background-subtracted, variance-stabilised channels plus observing conditions.

    For each band, with ``s = (image - background) / sqrt(background)`` (the signal in units of
    the sky noise), the inputs are:

    * ``clamp(s, -clip, clip)`` if ``linear`` (faint sources, near-Gaussian noise);
    * ``asinh(s / asinh_softening)`` if ``asinh`` (bright sources: logarithmic, never saturates);
    * if ``psf_aware``: constant maps ``(fwhm - fwhm_center) / fwhm_spread`` (arcsec) and
      ``log(background / sky_center)`` per band, so one network serves images of any seeing/sky.

    Missing pixels (NaN in the image) become 0 in every image channel (no signal).

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
    ) -> None:
        super().__init__()
        if not (linear or asinh):
            raise BlissConfigError(
                "encoder.normalizer: linear and asinh are both false; enable one."
            )
        if asinh_softening <= 0 or clip <= 0 or fwhm_spread <= 0 or sky_center <= 0:
            raise BlissConfigError(
                "encoder.normalizer: asinh_softening, clip, fwhm_spread and sky_center must be > 0."
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

    @property
    def n_channels(self) -> int:
        """Channels produced per image."""
        return self.n_bands * (int(self.linear) + int(self.asinh) + 2 * int(self.psf_aware))

    def forward(self, images: Tensor, background: Tensor, psf_fwhm_arcsec: Tensor) -> Tensor:
        """Normalise a batch.

        Args:
            images: electrons, sky included. Shape ``b c h w``.
            background: sky, electrons per pixel: ``b c`` (flat) or ``b c h w`` (a map).
            psf_fwhm_arcsec: PSF FWHM per band, arcsec: ``b c`` (one per image) or ``b c h w``
                (a map, for a PSF that varies over the image; each pixel sees its local value).

        Returns:
            Shape ``b f h w`` with ``f = n_channels``.
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
        return torch.cat(channels, dim=1)
