"""Flux and magnitude conversions.

Units: catalog fluxes are nanomaggies (nmgy); 1 nmgy is AB magnitude 22.5. ``MAGZERO`` is the AB
magnitude of one electron, so ``nmgy = electrons * 10**(0.4 * (22.5 - MAGZERO))``.
"""

import math

import torch
from torch import Tensor

__all__ = [
    "electrons_to_nmgy",
    "mag_to_nmgy",
    "nmgy_per_electron",
    "nmgy_to_electrons",
    "nmgy_to_mag",
]

_MAG_OF_ONE_NMGY = 22.5


def nmgy_per_electron(magzero: float) -> float:
    """Nanomaggies carried by one electron for a band with zero point ``magzero`` (AB mag)."""
    return 10 ** (0.4 * (_MAG_OF_ONE_NMGY - magzero))


def electrons_to_nmgy(electrons: Tensor | float, magzero: float | Tensor) -> Tensor | float:
    """Convert electrons to nanomaggies."""
    if isinstance(magzero, Tensor):
        return electrons * torch.pow(10.0, 0.4 * (_MAG_OF_ONE_NMGY - magzero))
    return electrons * nmgy_per_electron(magzero)


def nmgy_to_electrons(nmgy: Tensor | float, magzero: float | Tensor) -> Tensor | float:
    """Convert nanomaggies to electrons."""
    if isinstance(magzero, Tensor):
        return nmgy / torch.pow(10.0, 0.4 * (_MAG_OF_ONE_NMGY - magzero))
    return nmgy / nmgy_per_electron(magzero)


def nmgy_to_mag(nmgy: Tensor | float) -> Tensor | float:
    """AB magnitude of a flux in nanomaggies (``inf`` for non-positive fluxes)."""
    if isinstance(nmgy, Tensor):
        mag = _MAG_OF_ONE_NMGY - 2.5 * torch.log10(nmgy.clamp(min=1e-30))
        return torch.where(nmgy > 0, mag, torch.inf)
    return _MAG_OF_ONE_NMGY - 2.5 * math.log10(nmgy) if nmgy > 0 else math.inf


def mag_to_nmgy(mag: Tensor | float) -> Tensor | float:
    """Flux in nanomaggies of an AB magnitude."""
    if isinstance(mag, Tensor):
        return torch.pow(10.0, 0.4 * (_MAG_OF_ONE_NMGY - mag))
    return 10 ** (0.4 * (_MAG_OF_ONE_NMGY - mag))
