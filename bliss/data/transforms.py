"""Rotation and flip augmentation applied consistently to an image and its tile catalog.

Orientation conventions (see :data:`bliss.catalog.GALAXY_KEYS`): a position angle ``beta`` is
measured counter-clockwise from the +col axis towards +row and has period pi. Rotating the image
array by 90 degrees with ``torch.rot90(image, 1, dims=(-2, -1))`` sends ``(row, col)`` to
``(W - col, row)`` and ``beta`` to ``beta - pi/2``; mirroring the columns sends ``col`` to
``W - col`` and ``beta`` to ``pi - beta``. Spin-2 quantities ``(e1, e2)`` (ellipticity, shear)
turn with twice the angle; so do the PSF's ``(e1, e2)`` in an image's ``psf_shape``
(``c 3``: ``e1, e2, rho4``).
"""

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from bliss.catalog.batch import CATALOG_PREFIX, FIELD_PREFIX, catalog_key, field_key
from bliss.catalog.orientation import DEFAULT_ORIENTED_KEYS, Orientation, turn_orientation

__all__ = ["DEFAULT_ORIENTED_KEYS", "Orientation", "flip_cols", "rotate90"]


#: per-pixel inputs (``c h w``) that move with the image; ``background`` and
#: ``psf_fwhm_arcsec`` are maps only where they vary over the image
_PIXEL_MAPS = ("images", "background", "psf_fwhm_arcsec")


def _oriented(
    item: dict[str, Tensor], keys: Mapping[str, Orientation], angle: float, mirror: bool
) -> None:
    galaxy = item.get(catalog_key("source_type"))
    for key, kind in keys.items():
        for batch_key in (catalog_key(key), field_key(key)):
            if batch_key not in item:
                continue
            value = item[batch_key]
            turned = turn_orientation(value, Orientation(kind), angle, mirror)
            if kind == Orientation.POSITION_ANGLE and galaxy is not None:
                turned = torch.where(galaxy > 0.5, turned, value)
            item[batch_key] = turned
    if "psf_shape" in item:  # the PSF turns with the image; its wings (rho4) do not
        shape = item["psf_shape"]
        turned = turn_orientation(shape[..., :2], Orientation.SPIN2, angle, mirror)
        item["psf_shape"] = torch.cat([turned, shape[..., 2:]], dim=-1)


def rotate90(
    item: dict[str, Tensor], oriented_keys: Mapping[str, Orientation] = DEFAULT_ORIENTED_KEYS
) -> dict[str, Tensor]:
    """Rotate one example (image ``c h w`` and tile catalog ``ht wt m d``) by 90 degrees.

    Returns a new dict; pixel maps (``images``, and ``background`` and ``psf_fwhm_arcsec`` when
    they are maps), every ``catalog/*`` tensor and every region map ``fields/*`` (``hr wr d``)
    are moved together, and the PSF's ellipticity in ``psf_shape`` turns.
    """
    out = dict(item)
    for key in _PIXEL_MAPS:
        if key in out and out[key].ndim == 3:
            out[key] = torch.rot90(out[key], 1, dims=(-2, -1))
    for key, value in item.items():
        if key.startswith((CATALOG_PREFIX, FIELD_PREFIX)):
            out[key] = torch.rot90(value, 1, dims=(0, 1))
    if catalog_key("locs") in out:
        rows, cols = out[catalog_key("locs")].unbind(-1)
        locs = torch.stack([1.0 - cols, rows], dim=-1)
        on = _on_mask(out)
        out[catalog_key("locs")] = torch.where(on, locs.clamp(max=1.0 - 1e-6), 0.0)
    _oriented(out, oriented_keys, -math.pi / 2, mirror=False)
    return out


def flip_cols(
    item: dict[str, Tensor], oriented_keys: Mapping[str, Orientation] = DEFAULT_ORIENTED_KEYS
) -> dict[str, Tensor]:
    """Mirror one example left-right (``col -> W - col``)."""
    out = dict(item)
    for key in _PIXEL_MAPS:
        if key in out and out[key].ndim == 3:
            out[key] = torch.flip(out[key], dims=(-1,))
    for key, value in item.items():
        if key.startswith((CATALOG_PREFIX, FIELD_PREFIX)):
            out[key] = torch.flip(value, dims=(1,))
    if catalog_key("locs") in out:
        rows, cols = out[catalog_key("locs")].unbind(-1)
        locs = torch.stack([rows, 1.0 - cols], dim=-1)
        out[catalog_key("locs")] = torch.where(_on_mask(out), locs.clamp(max=1.0 - 1e-6), 0.0)
    _oriented(out, oriented_keys, 0.0, mirror=True)
    return out


def _on_mask(item: dict[str, Tensor]) -> Tensor:
    """Which slots hold a source. Shape: ``ht wt m 1``."""
    n_sources = item[catalog_key("n_sources")]
    max_sources = item[catalog_key("locs")].shape[-2]
    return (torch.arange(max_sources) < n_sources.unsqueeze(-1)).unsqueeze(-1)
