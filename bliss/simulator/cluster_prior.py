"""A crowded-field prior: the stars of a globular cluster, denser towards its centre."""

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from bliss.errors import BlissConfigError
from bliss.simulator.prior import CatalogPrior, power_law_quantile

__all__ = ["StarClusterPrior", "king_profile"]


def king_profile(radius: Tensor, core_radius: Tensor, tidal_radius: Tensor) -> Tensor:
    """King's (1962) surface density, normalised to 1 at the centre and 0 from ``tidal_radius``.

    ``[(1 + (r/rc)^2)^-1/2 - (1 + (rt/rc)^2)^-1/2]^2``, divided by its value at ``r = 0``.
    All arguments broadcast; same units.
    """
    edge = torch.rsqrt(1.0 + (tidal_radius / core_radius) ** 2)
    inner = torch.rsqrt(1.0 + (radius / core_radius) ** 2) - edge
    return torch.where(radius < tidal_radius, (inner / (1.0 - edge)) ** 2, 0.0)


class StarClusterPrior(CatalogPrior):
    """Stars only, with a King-profile density around a cluster centre plus a uniform field.

    Each image draws its own cluster: a central surface density (stars per px², log-uniform in
    ``central_density_per_px2``), a core radius (px, log-uniform in ``core_radius_px``), a tidal
    radius ``core_radius * 10**concentration``, and a centre placed uniformly within
    ``center_offset_px`` (in row and column) of the middle of the drawn grid. The mean count of a
    tile is the density at its centre, ``field_density_per_px2`` plus the King profile, times the
    tile's area; counts are Poisson, truncated at ``max_sources``. Fluxes follow the reference-band
    power law ``star_flux`` (the luminosity function over the fitted range) and the stellar colours
    of :class:`CatalogPrior`. With ``star_flux.alpha`` a ``[low, high]`` range, each image draws
    its own slope, uniform in it: clusters differ in their luminosity functions, and a model
    trained on one slope reads the crowding of another wrongly.

    Args:
        bands: band names in channel order.
        reference_band: band whose flux follows the power law.
        pixel_scale_arcsec: pixel side, arcsec.
        tile_slen: tile side in pixels [default: 2].
        max_sources: sources per tile at most [default: 6]; must be at least the mean count of
            the densest tile (a truncation near the mean would bias the prior's counts).
        central_density_per_px2: ``[low, high]`` stars per px² at the cluster centre.
        core_radius_px: ``[low, high]`` King core radius, px.
        concentration: ``log10(tidal radius / core radius)``.
        field_density_per_px2: uniform density of field stars, per px².
        center_offset_px: how far from the grid's middle the centre may fall, px.
        star_flux: ``{min_nmgy, max_nmgy, alpha}``, ``N(> F) ~ F^-alpha``; ``alpha`` a number or
            ``[low, high]`` (per image, uniform).
        star_colors: ``{mean, slope, scatter}`` per band (see :class:`CatalogPrior`).

    Example:
        >>> prior = StarClusterPrior(["r"], "r", 0.396, central_density_per_px2=[0.5, 0.5],
        ...     core_radius_px=[20, 20])
        >>> catalog = prior.sample(1, 24, 24, torch.Generator().manual_seed(0))
        >>> int(catalog["n_sources"].max()) > 1, bool(catalog.galaxy_mask.any())
        (True, False)
    """

    def __init__(
        self,
        bands: Sequence[str],
        reference_band: str,
        pixel_scale_arcsec: float,
        tile_slen: int = 2,
        max_sources: int = 6,
        central_density_per_px2: Sequence[float] = (0.05, 1.0),
        core_radius_px: Sequence[float] = (20.0, 200.0),
        concentration: float = 1.6,
        field_density_per_px2: float = 0.002,
        center_offset_px: float = 100.0,
        star_flux: Mapping[str, float] | None = None,
        star_colors: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        star_flux = dict(star_flux) if star_flux is not None else None
        self.alpha_range = None
        if star_flux is not None and isinstance(star_flux.get("alpha"), Sequence):
            self.alpha_range = _check_range("star_flux.alpha", star_flux["alpha"])
            star_flux["alpha"] = sum(self.alpha_range) / 2  # checked as one; drawn per image
        super().__init__(
            bands,
            reference_band,
            pixel_scale_arcsec,
            tile_slen=tile_slen,
            max_sources=max_sources,
            density_per_arcmin2=0.0,
            prob_galaxy=0.0,
            star_flux=star_flux,
            star_colors=star_colors,
        )
        self.central_density = _check_range("central_density_per_px2", central_density_per_px2)
        self.core_radius = _check_range("core_radius_px", core_radius_px)
        if not concentration > 0:
            raise BlissConfigError(
                f"prior.concentration={concentration}; expected log10(tidal / core radius) > 0."
            )
        if not field_density_per_px2 >= 0:
            raise BlissConfigError(
                f"prior.field_density_per_px2={field_density_per_px2}; expected a density >= 0."
            )
        if not center_offset_px >= 0:
            raise BlissConfigError(
                f"prior.center_offset_px={center_offset_px}; expected a distance >= 0 px."
            )
        self.concentration = float(concentration)
        self.field_density = float(field_density_per_px2)
        self.center_offset = float(center_offset_px)
        peak = (self.central_density[1] + self.field_density) * tile_slen**2
        if max_sources < peak:
            raise BlissConfigError(
                f"prior.max_sources={max_sources} is below the mean count of the densest tile "
                f"({peak:.2f} stars at central_density_per_px2={self.central_density[1]} on "
                f"{tile_slen} x {tile_slen} px tiles); raise it or lower the density."
            )

    def density_per_px2(
        self, rows: Tensor, cols: Tensor, center: Tensor, central_density: Tensor, core: Tensor
    ) -> Tensor:
        """Stars per px² at pixel ``(rows, cols)`` for clusters ``(center b 2, density b, core b)``.

        ``rows`` and ``cols`` broadcast against each other; the result is ``b *rows.shape``.
        """
        extra = (1,) * max(rows.ndim, cols.ndim)
        drow = rows - center[:, 0].view(-1, *extra)
        dcol = cols - center[:, 1].view(-1, *extra)
        core = core.view(-1, *extra)
        radius = torch.sqrt(drow**2 + dcol**2)
        king = king_profile(radius, core, core * 10.0**self.concentration)
        return self.field_density + central_density.view(-1, *extra) * king

    def draw_clusters(
        self, n_images: int, n_rows: int, n_cols: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per image: centre (``b 2``, px), central density (``b``) and core radius (``b``)."""
        draw = torch.rand(n_images, 4, generator=generator, dtype=torch.float64)
        middle = torch.tensor([n_rows / 2, n_cols / 2], dtype=torch.float64)
        center = middle + (2 * draw[:, :2] - 1) * self.center_offset
        density = _log_uniform(self.central_density, draw[:, 2])
        core = _log_uniform(self.core_radius, draw[:, 3])
        return center.float(), density.float(), core.float()

    def tile_rates(
        self, n_images: int, n_tiles_h: int, n_tiles_w: int, generator: torch.Generator
    ) -> Tensor:
        """Mean count of every tile (``b ht wt``): the density at its centre times its area."""
        slen = self.tile_slen
        center, density, core = self.draw_clusters(
            n_images, n_tiles_h * slen, n_tiles_w * slen, generator
        )
        rows = (torch.arange(n_tiles_h) + 0.5).view(-1, 1) * slen
        cols = (torch.arange(n_tiles_w) + 0.5).view(1, -1) * slen
        return self.density_per_px2(rows, cols, center, density, core) * slen**2

    def _star_reference_flux(
        self, image: Tensor, n_images: int, generator: torch.Generator
    ) -> Tensor:
        """The power law ``star_flux``, with each image's own slope where ``alpha`` is a range."""
        if self.alpha_range is None:
            return super()._star_reference_flux(image, n_images, generator)
        low, high = self.alpha_range
        alpha = low + (high - low) * torch.rand(n_images, generator=generator, dtype=torch.float64)
        u = torch.rand(image.shape, generator=generator, dtype=torch.float64)
        spec = self.star_flux
        return power_law_quantile(u, spec["min_nmgy"], spec["max_nmgy"], alpha[image]).float()


def _log_uniform(bounds: tuple[float, float], u: Tensor) -> Tensor:
    low, high = bounds
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def _check_range(key: str, bounds: Sequence[float]) -> tuple[float, float]:
    values = [float(b) for b in bounds]
    if len(values) != 2 or not 0 < values[0] <= values[1]:
        raise BlissConfigError(
            f"prior.{key}={list(bounds)}; expected [low, high] with 0 < low <= high."
        )
    return values[0], values[1]
