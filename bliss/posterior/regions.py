"""Posterior factors of quantities that belong to a region, not to a source.

A weak-lensing shear, a convergence map, a sky offset or a cluster richness is one value per image
or per coarse tile (say 64 px), whatever the sources in it. A :class:`RegionFactor` wraps any
:class:`~bliss.posterior.factors.Factor` (its family, its key and dimension ``d``) with the side of
its regions. Its truth travels in a batch under ``fields/<key>`` with shape ``b hr wr d``
(``hr = wr = 1`` for a whole-image quantity) and its parameters have shape ``b hr wr p``.
"""

from collections.abc import Mapping

from torch import Tensor

from bliss.catalog.batch import field_key
from bliss.catalog.shapes import check_shape
from bliss.errors import BlissConfigError, BlissValueError
from bliss.posterior.factors import Factor

__all__ = ["RegionFactor", "check_regions", "region_grid"]


class RegionFactor:
    """A factor for one value per region: the whole image, or each coarse tile of ``region_px``.

    Args:
        factor: the distribution family, key and dimension (its ``gate`` is unused).
        region_px: side of a region, px (a multiple of the tile side that divides the image), or
            None for one value per image [default: None].

    Example:
        >>> from bliss.posterior.factors import NormalFactor
        >>> shear = RegionFactor(NormalFactor("shear", dim=2))
        >>> shear.key, shear.n_params, region_grid(shear, 4, 256, 256)
        ('shear', 4, (1, 1))
    """

    def __init__(self, factor: Factor, region_px: int | None = None) -> None:
        if not isinstance(factor, Factor):
            raise BlissConfigError(
                f"RegionFactor: factor is a {type(factor).__name__}; expected a "
                "bliss.posterior.factors.Factor (e.g. NormalFactor)."
            )
        if region_px is not None and region_px < 1:
            raise BlissConfigError(
                f"RegionFactor for `{factor.key}`: region_px={region_px}; expected a positive "
                "side in pixels, or null for one value per image."
            )
        self.factor = factor
        self.region_px = region_px

    @property
    def key(self) -> str:
        """The quantity's key (truth under ``fields/<key>``)."""
        return self.factor.key

    @property
    def n_params(self) -> int:
        """Raw parameters per region."""
        return self.factor.n_params

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """Log density of the true values (``b hr wr d``) under ``params`` (``b hr wr p``): ``b hr wr``."""
        sizes = check_shape("params", params, "b hr wr p", {"p": self.n_params})
        check_shape(
            field_key(self.key),
            value,
            "b hr wr d",
            {"b": sizes["b"], "hr": sizes["hr"], "wr": sizes["wr"], "d": self.factor.dim},
        )
        return self.factor.log_prob(params, value)

    def quantile(self, params: Tensor, q: float) -> Tensor:
        """The ``q`` quantile of every coordinate (``b hr wr d``)."""
        return self.factor.quantile(params, q)

    def point_estimate(self, params: Tensor) -> Tensor:
        """The posterior median (``b hr wr d``)."""
        return self.factor.point_estimate(params)

    def sample(self, params: Tensor) -> Tensor:
        """One draw per region (``b hr wr d``)."""
        return self.factor.sample(params)


def region_grid(
    region: RegionFactor, tile_slen: int, height_px: int, width_px: int
) -> tuple[int, int]:
    """Regions per image side ``(hr, wr)`` for an image of that size.

    Raises:
        BlissValueError: ``region_px`` is not a multiple of ``tile_slen`` or does not divide the
            image.
    """
    side = region.region_px
    if side is None:
        return 1, 1
    if side % tile_slen or height_px % side or width_px % side:
        raise BlissValueError(
            f"region factor `{region.key}`: region_px={side}; expected a multiple of the tile "
            f"side {tile_slen} that divides the image ({height_px} x {width_px} px)."
        )
    return height_px // side, width_px // side


def check_regions(regions: Mapping[str, RegionFactor | None] | None) -> dict[str, RegionFactor]:
    """The region factors of an encoder, without the ``None`` entries a preset drops."""
    checked = {}
    for name, region in (regions or {}).items():
        if region is None:
            continue
        if not isinstance(region, RegionFactor):
            raise BlissConfigError(
                f"encoder.regions.{name} is a {type(region).__name__}; expected a "
                "bliss.posterior.regions.RegionFactor."
            )
        checked[name] = region
    return checked
