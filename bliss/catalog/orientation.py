"""How catalog and region quantities turn when the image turns (quarter turns and mirrors).

Conventions (see :data:`bliss.catalog.GALAXY_KEYS`): a position angle ``beta`` is measured
counter-clockwise from the +col axis towards +row and has period pi. Rotating the image array by
90 degrees with ``torch.rot90(image, 1, dims=(-2, -1))`` sends ``beta`` to ``beta - pi/2``;
mirroring the columns sends ``beta`` to ``pi - beta``. Spin-2 quantities ``(e1, e2)``
(ellipticity, shear) turn with twice the angle. Quantities not listed are scalars, which do not
change.
"""

import math
from enum import StrEnum

import torch
from torch import Tensor

__all__ = ["DEFAULT_ORIENTED_KEYS", "Orientation", "quarter_turn", "turn_orientation"]


class Orientation(StrEnum):
    """How a catalog field transforms under rotations and flips."""

    POSITION_ANGLE = "position_angle"  # d = 1, radians, period pi
    SPIN2 = "spin2"  # d = 2, (e1, e2)


DEFAULT_ORIENTED_KEYS: dict[str, Orientation] = {
    "beta_rad": Orientation.POSITION_ANGLE,
    "shear": Orientation.SPIN2,
    "shear_map": Orientation.SPIN2,
    "ellipticity": Orientation.SPIN2,
}


def turn_orientation(value: Tensor, kind: Orientation, angle: float, mirror: bool) -> Tensor:
    """Apply a mirror (``beta -> -beta``) and then a rotation by ``angle`` to an orientation."""
    if kind == Orientation.POSITION_ANGLE:
        beta = -value if mirror else value
        return torch.remainder(beta + angle, math.pi)
    e1, e2 = value.unbind(-1)
    if mirror:
        e2 = -e2
    cos, sin = math.cos(2 * angle), math.sin(2 * angle)
    return torch.stack([cos * e1 - sin * e2, sin * e1 + cos * e2], dim=-1)


def quarter_turn(k: int) -> float:
    """The orientation angle of ``torch.rot90(image, k, dims=(-2, -1))``, radians."""
    return -k * math.pi / 2
