"""Region posteriors averaged over the eight turns of the image (quarter turns and mirrors).

The sky has no preferred direction, so the posterior of a region quantity (a shear, a
convergence map) given an image turned by a quarter turn or mirrored, turned back, is the
posterior given the image. A trained network is equivariant only approximately: what it adds that
does not turn with the image (an additive shear bias ``c`` of a few 1e-3 in the weak-lensing
study, case_studies/weak_lensing/README.md) averages to zero over the eight turns, while what it
measures turns with the image and stays. :func:`turned_region_params` returns the equal mixture of
the eight turned-back posteriors as one normal per coordinate with the mixture's mean and
variance (the turns' posteriors nearly agree, so the mixture is close to normal).
"""

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from bliss.catalog.orientation import (
    DEFAULT_ORIENTED_KEYS,
    Orientation,
    quarter_turn,
    turn_orientation,
)
from bliss.errors import BlissConfigError
from bliss.posterior.factors import NormalFactor
from bliss.posterior.regions import RegionFactor

__all__ = ["DIHEDRAL_TURNS", "turn_inputs", "turned_region_params"]

#: the eight turns of the square: the columns mirrored or not, then ``k`` quarter turns
DIHEDRAL_TURNS: tuple[tuple[int, bool], ...] = tuple(
    (k, mirror) for mirror in (False, True) for k in range(4)
)


def turn_inputs(data: Mapping[str, Tensor], k: int, mirror: bool) -> dict[str, Tensor]:
    """The encoder's inputs of a turned image: the columns mirrored, then ``k`` quarter turns.

    Every tensor with the images' number of dimensions (``c h w`` or ``b c h w``: the images,
    and the sky and seeing where they are maps) turns over its last two axes; the PSF's
    ellipticity in ``psf_shape`` (``... 3``: ``e1, e2, rho4``) turns as a spin-2 quantity;
    per-image values (a scalar sky or seeing per band) stay.
    """
    pixels = data["images"].ndim
    out = {}
    for key, value in data.items():
        if value.ndim == pixels:
            value = torch.flip(value, dims=(-1,)) if mirror else value
            value = torch.rot90(value, k, dims=(-2, -1))
        out[key] = value
    if "psf_shape" in out:
        shape = out["psf_shape"]
        turned = turn_orientation(shape[..., :2], Orientation.SPIN2, quarter_turn(k), mirror)
        out["psf_shape"] = torch.cat([turned, shape[..., 2:]], dim=-1)
    return out


def _turned_back(
    loc: Tensor, scale: Tensor, kind: Orientation | None, k: int, mirror: bool
) -> tuple[Tensor, Tensor]:
    """A turned image's region posterior (``b hr wr d``) in the original image's frame.

    The region grid is turned back (``k`` quarter turns undone, then the mirror), and a spin-2
    mean turns by the inverse of the image's turn, which for quarter turns and mirrors is the
    turn itself (each is a sign change of ``e1`` and ``e2``).
    """
    loc, scale = torch.rot90(loc, -k, dims=(1, 2)), torch.rot90(scale, -k, dims=(1, 2))
    if mirror:
        loc, scale = torch.flip(loc, dims=(2,)), torch.flip(scale, dims=(2,))
    if kind == Orientation.SPIN2:
        loc = turn_orientation(loc, kind, quarter_turn(k), mirror)
    return loc, scale


def _normal_params(factor: NormalFactor, loc: Tensor, scale: Tensor) -> Tensor:
    """Raw parameters (``... (d two)``) of ``factor`` for the given mean and width."""
    # the inverse of NormalFactor's softplus(raw) + min_scale; the width of a mixture of
    # widths >= min_scale is >= min_scale, the clamp only guards the rounding at equality
    excess = (scale - factor.min_scale).clamp(min=1e-12)
    raw = excess + torch.log(-torch.expm1(-excess))
    return torch.stack([loc, raw], dim=-1).flatten(-2)


def turned_region_params(
    regions: Mapping[str, RegionFactor],
    region_params: Callable[[dict[str, Tensor]], Mapping[str, Tensor]],
    data: Mapping[str, Tensor],
    unturned: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Every region factor's raw parameters, averaged over the image's eight turns.

    Args:
        regions: the encoder's region factors, by name (normal factors only).
        region_params: the inputs of a turned image -> each region's raw parameters
            (``b hr wr p``), e.g. the encoder's features and region heads.
        data: the inputs of the image (see :func:`turn_inputs`).
        unturned: ``region_params`` of the image as it is, where the caller already has them
            (they are not computed again).

    Returns:
        Raw parameters (``b hr wr p``) of a normal per coordinate with the mean and variance of
        the equal mixture of the eight turned-back posteriors.

    Raises:
        BlissConfigError: a region factor is not normal, or is a position angle.
    """
    kinds = {}
    for name, region in regions.items():
        kind = DEFAULT_ORIENTED_KEYS.get(region.key)
        if not isinstance(region.factor, NormalFactor) or kind == Orientation.POSITION_ANGLE:
            raise BlissConfigError(
                f"encoder.regions.{name}: a {type(region.factor).__name__} for `{region.key}`; "
                "averaging over turns (predict.region_turns=8) needs a NormalFactor of a scalar "
                "or spin-2 quantity. Set predict.region_turns=1."
            )
        kinds[name] = kind
    means: dict[str, list[Tensor]] = {name: [] for name in regions}
    variances: dict[str, list[Tensor]] = {name: [] for name in regions}
    for k, mirror in DIHEDRAL_TURNS:
        if (k, mirror) == (0, False) and unturned is not None:
            params = unturned
        else:
            params = region_params(turn_inputs(data, k, mirror))
        for name, region in regions.items():
            loc, scale = region.factor._loc_scale(params[name].float())
            loc, scale = _turned_back(loc, scale, kinds[name], k, mirror)
            means[name].append(loc)
            variances[name].append(scale**2)
    out = {}
    for name, region in regions.items():
        stacked = torch.stack(means[name])
        variance = torch.stack(variances[name]).mean(0) + stacked.var(0, correction=0)
        out[name] = _normal_params(region.factor, stacked.mean(0), variance.sqrt())
    return out
