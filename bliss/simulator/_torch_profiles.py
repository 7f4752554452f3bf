"""Fourier transforms of the profiles of :class:`~bliss.simulator.torch_render.TorchRenderer`, in torch.

- exponential disk: analytic, ``(1 + (k r_s)^2)^-3/2``;
- de Vaucouleurs bulge: a mixture of 32 Gaussians whose fluxes are fitted once per process
  (non-negative least squares on the radial profile, in the spirit of Hogg & Lang 2013); its
  Fourier transform is within 5e-5 of the exact one (GalSim's);
- Moffat PSF: analytic, ``x^nu K_nu(x)`` with ``nu = beta - 1``;
- PSF images: their discrete Fourier transform (band-limited, i.e. sinc interpolation) with the
  pixel divided out.

The radial transforms are tabulated on a ``log1p`` grid and interpolated linearly on the device
of the query. Wave numbers ``k`` are in radians per arcsec, frequencies in cycles per pixel.

References:
    Hogg, D. W. & Lang, D. 2013, "Replacing standard galaxy profiles with mixtures of
    Gaussians", PASP 125, 719.
"""

__all__ = [
    "DEVAUCOULEURS_B",
    "EXP_HLR_PER_SCALE_RADIUS",
    "RadialTable",
    "devaucouleurs_fourier",
    "devaucouleurs_mixture",
    "exponential_radius",
    "galaxy_fourier",
    "image_fourier",
    "log1p_grid",
    "moffat_fourier",
    "moffat_scale_radius",
]

import math
from functools import cache

import numpy as np
import torch
from einops import rearrange
from scipy.optimize import nnls
from scipy.special import gammaincinv, kve, lambertw
from torch import Tensor

from bliss.simulator._stamps import frequencies

#: Sersic index 4: the half-light radius holds half the light of ``exp(-b r^(1/4))``
DEVAUCOULEURS_B = float(gammaincinv(8, 0.5))


def exponential_radius(fraction_outside: float) -> float:
    """Radius, in scale radii, outside which an exponential profile has this fraction of its light."""
    return float(-lambertw(-fraction_outside / math.e, k=-1).real - 1)


EXP_HLR_PER_SCALE_RADIUS = exponential_radius(0.5)


def log1p_grid(x_max: float, n_points: int) -> tuple[float, np.ndarray]:
    """Step and points ``expm1(step * i)`` of a grid from 0 to ``x_max``, dense near 0."""
    step = math.log1p(x_max) / (n_points - 1)
    return step, np.expm1(step * np.arange(n_points))


class RadialTable:
    """A real radial Fourier transform tabulated on a :func:`log1p_grid` of this ``step``.

    The last value is set to 0, which is also the value beyond the grid.
    """

    def __init__(self, step: float, values: np.ndarray) -> None:
        self.step = step
        self.values = torch.as_tensor(values, dtype=torch.float64).clone()
        self.values[-1] = 0.0
        self._on_device: dict[tuple, Tensor] = {}

    def __call__(self, x: Tensor) -> Tensor:
        """Values at ``x`` (any shape, >= 0), linearly interpolated."""
        key = (x.device, x.dtype)
        if key not in self._on_device:
            self._on_device[key] = self.values.to(x.device, x.dtype)
        values = self._on_device[key]
        position = (torch.log1p(x) / self.step).clamp_(max=len(values) - 1)
        index = position.floor().clamp_(max=len(values) - 2)
        left = values[index.long()]
        return left.add_((values[index.long() + 1] - left).mul_(position.sub_(index)))


@cache
def devaucouleurs_mixture(n_components: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Widths (sigma, in half-light radii) and fluxes (sum 1) of Gaussians approximating a de Vaucouleurs profile.

    The widths are log-spaced from 1e-5 to 100; the fluxes minimise the squared error of the
    surface brightness weighted by the area element ``2 pi r^2 dln r``, a proxy for the
    flux-weighted (L1) error, which bounds the error of the Fourier transform at every frequency.
    """
    radius = np.logspace(-7, 3, 4000)
    area = 2 * np.pi * radius**2 * math.log(radius[1] / radius[0])
    unit_flux = DEVAUCOULEURS_B**8 / (8 * np.pi * math.factorial(7))
    target = unit_flux * np.exp(-DEVAUCOULEURS_B * radius**0.25)
    widths = np.logspace(-5, 2, n_components)
    gaussians = np.exp(-0.5 * (radius[:, None] / widths) ** 2) / (2 * np.pi * widths**2)
    design = gaussians * np.sqrt(area)[:, None]
    norms = np.linalg.norm(design, axis=0)  # column scaling keeps the solver well conditioned
    fluxes = nnls(design / norms, target * np.sqrt(area), maxiter=100 * n_components)[0] / norms
    return widths, fluxes / fluxes.sum()


@cache
def devaucouleurs_fourier() -> RadialTable:
    """Fourier transform of a unit-flux de Vaucouleurs profile; ``x`` is ``k`` times the hlr."""
    widths, fluxes = devaucouleurs_mixture()
    step, x = log1p_grid(1e4, 4096)
    return RadialTable(step, np.exp(-0.5 * np.outer(x, widths) ** 2) @ fluxes)


@cache
def moffat_fourier(beta: float) -> RadialTable:
    """Fourier transform of a unit-flux Moffat profile; ``x`` is ``k`` times the scale radius."""
    nu = beta - 1
    step, x = log1p_grid(80.0, 2048)
    x = np.maximum(x, 1e-12)
    # x^nu K_nu(x) -> 2^(nu - 1) Gamma(nu) as x -> 0
    log_value = nu * np.log(x) + np.log(kve(nu, x)) - x - (nu - 1) * math.log(2) - math.lgamma(nu)
    return RadialTable(step, np.exp(log_value))


def moffat_scale_radius(fwhm: Tensor, beta: float) -> Tensor:
    """Scale radius ``alpha`` of a Moffat profile of this FWHM: ``(1 + (r / alpha)^2)^-beta``."""
    return fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))


def image_fourier(image: Tensor, dilation: Tensor, freq_row: Tensor, freq_col: Tensor) -> Tensor:
    """Fourier transform of a unit-sum, pixel-integrated PSF image, dilated, without the pixel.

    Args:
        image: the PSF image, centred on its middle: ``h w``, or one per dilation (``u h w``).
        dilation: factors to dilate it by (flux preserved). Shape: ``u``.
        freq_row: row frequencies, cycles per pixel. Shape: ``s``.
        freq_col: column frequencies, cycles per pixel. Shape: ``m``.

    Returns:
        The transform; the image is band-limited (sinc interpolated), so frequencies beyond its
        Nyquist limit are 0. Shape: ``u s m``.
    """
    height, width = image.shape[-2:]
    row = torch.arange(height, device=image.device) - (height - 1) / 2
    col = torch.arange(width, device=image.device) - (width - 1) / 2
    f_row = dilation[:, None] * freq_row  # u s, cycles per image pixel
    f_col = dilation[:, None] * freq_col
    along_rows = torch.exp(-2j * math.pi * f_row[..., None] * row)  # u s h
    along_cols = torch.exp(-2j * math.pi * f_col[..., None] * col)  # u m w
    fourier = along_rows @ image.to(along_rows.dtype) @ along_cols.transpose(1, 2)
    pixel = torch.sinc(f_row)[:, :, None] * torch.sinc(f_col)[:, None, :]
    inside = (f_row.abs() <= 0.5)[:, :, None] & (f_col.abs() <= 0.5)[:, None, :]
    return torch.where(inside, fourier / pixel, 0)


def galaxy_fourier(
    params: Tensor, size: int, scale: float, lensing_matrix: Tensor | None = None
) -> Tensor:
    """Fourier transform of bulge + disk galaxies before the PSF, on a real-FFT grid.

    Args:
        params: the :data:`~bliss.catalog.tile.GALAXY_KEYS` of each galaxy, in that order (see
            :func:`~bliss.simulator.render.galaxy_profile`). Shape: ``g 6``.
        size: stamp side, pixels.
        scale: pixel size, arcsec.
        lensing_matrix: the matrix ``M`` of :func:`bliss.simulator.lensing.lensing_matrix` of each
            galaxy (``g 2 2``, ``(col, row)`` basis); the lensed transform is ``det(M) F(M k)``
            [default: none, unit-flux galaxies].

    Returns:
        The transform, in the dtype and on the device of ``params``. Shape: ``g size m``.
    """
    freq_row, freq_col = (torch.as_tensor(f).to(params) for f in frequencies(size))
    k_row = (2 * math.pi / scale) * rearrange(freq_row, "s -> s 1")
    k_col = (2 * math.pi / scale) * rearrange(freq_col, "m -> 1 m")
    grids = torch.stack(torch.broadcast_tensors(k_col**2, k_row**2, k_row * k_col))  # 3 s m
    disk_frac, beta, disk_q, disk_hlr, bulge_q, bulge_hlr = rearrange(params, "g d -> d g")
    cos, sin = torch.cos(beta), torch.sin(beta)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)

    def scaled_k2(q: Tensor, hlr: Tensor) -> Tensor:
        """``(k hlr)^2`` with ``k_major^2 / q + k_minor^2 q``, the wave vector in the galaxy's axes."""
        axes = torch.diag_embed(torch.stack([1 / q, q], -1) * hlr[:, None] ** 2)
        form = rotation @ axes @ rotation.transpose(-1, -2)  # g 2 2 in (col, row)
        if lensing_matrix is not None:  # the form of M k
            form = lensing_matrix @ form @ lensing_matrix
        coefficients = torch.stack([form[:, 0, 0], form[:, 1, 1], 2 * form[:, 0, 1]], -1)
        return torch.einsum("gt,tsm->gsm", coefficients, grids)

    disk = (1 + scaled_k2(disk_q, disk_hlr) / EXP_HLR_PER_SCALE_RADIUS**2).rsqrt_().pow_(3)
    bulge = devaucouleurs_fourier()(scaled_k2(bulge_q, bulge_hlr).clamp_(min=0).sqrt_())
    profile = torch.lerp(bulge, disk, rearrange(disk_frac, "g -> g 1 1"))
    if lensing_matrix is not None:
        profile = profile * rearrange(torch.linalg.det(lensing_matrix), "g -> g 1 1")
    return profile
