"""The catalog prior: what a random patch of sky contains, sampled tile by tile."""

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from einops import rearrange
from torch import Tensor

from bliss.catalog import GALAXY_KEYS, TileCatalog
from bliss.errors import BlissConfigError

__all__ = ["CatalogPrior", "GalaxyShapeCatalog", "power_law_quantile"]

_ARCSEC_PER_ARCMIN = 60.0


class GalaxyShapeCatalog(Protocol):
    """Draws galaxy shapes (each of :data:`GALAXY_KEYS`, ``n 1``) for reference-band magnitudes ``n``.

    It may also return ``colors`` (``n c``, each band's magnitude minus the reference band's),
    which then replace the prior's galaxy colours, and further keys (``n d``, e.g. a
    redshift), which become catalog keys of the galaxies (0 for stars).
    """

    def sample(self, ref_mag: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Shapes of ``len(ref_mag)`` galaxies."""
        ...  # a protocol


class CatalogPrior:
    """A prior over tile catalogs of stars and bulge + disk galaxies.

    Per tile, the number of sources is Poisson with mean ``density_per_arcmin2`` times the tile
    area, with counts above ``max_sources`` set to ``max_sources``. Positions are uniform in the
    tile. A source is a galaxy with probability ``prob_galaxy``. Reference-band fluxes follow a
    power law truncated to ``[min_nmgy, max_nmgy]`` with ``N(> F) ~ F^-alpha`` (separately for stars
    and galaxies). Other bands are set by colours: ``mag_b - mag_ref = mean_b + slope_b * t +
    scatter_b * eps_b`` with one latent ``t ~ N(0, 1)`` per source (a "temperature" that moves the
    source along the stellar or galaxy locus) and independent ``eps_b ~ N(0, 1)``. Galaxy shapes:
    disk fraction uniform in ``disk_frac`` ([0, 1] unless given), half-light radii log-normal (arcsec, clipped to
    ``[min, max]``), axis ratios uniform in ``[q_min, 1]``, position angle uniform in [0, pi).

    Args:
        bands: band names in channel order (normally ``${survey.bands}``).
        reference_band: band whose flux follows the power law.
        pixel_scale_arcsec: pixel side, arcsec (to turn the density into sources per tile).
        tile_slen: tile side in pixels [default: 4].
        max_sources: sources per tile at most [default: 1].
        density_per_arcmin2: mean number of sources per square arcminute.
        prob_galaxy: probability that a source is a galaxy.
        star_flux: ``{min_nmgy, max_nmgy, alpha}`` for stars.
        galaxy_flux: ``{min_nmgy, max_nmgy, alpha}`` for galaxies.
        star_colors: ``{mean, slope, scatter}``, each a mapping band -> mag offset from the
            reference band. Bands beyond ``bands`` are ignored; missing ones are an error.
            ``None`` gives every band the reference flux.
        galaxy_colors: same for galaxies.
        galaxy_shape: ``{disk_hlr_arcsec: {median, sigma, min, max}, bulge_hlr_arcsec: {...},
            q_min, disk_frac: [low, high]}``; ``sigma`` is the standard deviation of the
            natural log.
        corner_fraction: share of sources placed within ``corner_px`` (in row and column) of one
            of their tile's corners, each a point four tiles share [default: 0, positions
            uniform]. A training device, not a claim about the sky: uniform positions put a
            source that close to a corner once in ~1600, too rarely for the checkerboard's last
            group to learn to claim a source that its three neighbours split between them and
            left.
        corner_px: see ``corner_fraction`` [default: 0.05].
        galaxy_shape_catalog: draws galaxy shapes from a catalog of real galaxies given their
            reference-band magnitudes (e.g. :class:`bliss.simulator.cosmos.CosmosShapes`),
            instead of ``galaxy_shape`` [default: none]; one that also draws colours (e.g.
            :class:`bliss.simulator.cosmos_population.CosmosPopulation`) replaces
            ``galaxy_colors`` too.

    Example:
        >>> prior = CatalogPrior(["g", "r"], "r", 0.396, density_per_arcmin2=2000.0,
        ...     star_colors={"mean": {"g": 0.5, "r": 0}, "slope": {"g": 0.3, "r": 0},
        ...                  "scatter": {"g": 0.05, "r": 0}})
        >>> cat = prior.sample(2, 8, 8, torch.Generator().manual_seed(0))
        >>> cat["fluxes"].shape
        torch.Size([2, 8, 8, 1, 2])
    """

    def __init__(
        self,
        bands: Sequence[str],
        reference_band: str,
        pixel_scale_arcsec: float,
        tile_slen: int = 4,
        max_sources: int = 1,
        density_per_arcmin2: float = 4.2,
        prob_galaxy: float = 0.5,
        star_flux: Mapping[str, float] | None = None,
        galaxy_flux: Mapping[str, float] | None = None,
        star_colors: Mapping[str, Mapping[str, float]] | None = None,
        galaxy_colors: Mapping[str, Mapping[str, float]] | None = None,
        galaxy_shape: Mapping | None = None,
        corner_fraction: float = 0.0,
        corner_px: float = 0.05,
        galaxy_shape_catalog: GalaxyShapeCatalog | None = None,
    ) -> None:
        self.bands = tuple(bands)
        if reference_band not in self.bands:
            raise BlissConfigError(
                f"prior.reference_band={reference_band!r} is not one of bands {list(self.bands)}."
            )
        self.reference_index = self.bands.index(reference_band)
        if tile_slen < 1:
            raise BlissConfigError(f"prior.tile_slen={tile_slen}; expected an integer >= 1.")
        if max_sources < 1:
            raise BlissConfigError(f"prior.max_sources={max_sources}; expected an integer >= 1.")
        if not density_per_arcmin2 >= 0:
            raise BlissConfigError(
                f"prior.density_per_arcmin2={density_per_arcmin2}; expected a density >= 0."
            )
        if not 0 <= prob_galaxy <= 1:
            raise BlissConfigError(f"prior.prob_galaxy={prob_galaxy}; expected a value in [0, 1].")
        self.tile_slen = tile_slen
        self.max_sources = max_sources
        self.density_per_arcmin2 = density_per_arcmin2
        self.prob_galaxy = prob_galaxy
        tile_arcmin = tile_slen * pixel_scale_arcsec / _ARCSEC_PER_ARCMIN
        self.mean_sources_per_tile = density_per_arcmin2 * tile_arcmin**2
        default_flux = {"min_nmgy": 0.63, "max_nmgy": 1000.0, "alpha": 0.5}
        self.star_flux = _check_power_law("prior.star_flux", star_flux or default_flux)
        self.galaxy_flux = _check_power_law("prior.galaxy_flux", galaxy_flux or default_flux)
        no_colors = torch.zeros(3, len(self.bands))  # every band as bright as the reference
        self.star_colors = (
            no_colors
            if star_colors is None
            else self._color_table("prior.star_colors", star_colors)
        )
        self.galaxy_colors = (
            no_colors
            if galaxy_colors is None
            else self._color_table("prior.galaxy_colors", galaxy_colors)
        )
        self.galaxy_shape = _check_shape_config(galaxy_shape or {})
        if not 0 <= corner_fraction <= 1:
            raise BlissConfigError(
                f"prior.corner_fraction={corner_fraction}; expected a share in [0, 1]."
            )
        if not 0 < corner_px <= tile_slen:
            raise BlissConfigError(
                f"prior.corner_px={corner_px}; expected a distance in (0, tile_slen={tile_slen}] px."
            )
        self.corner_fraction = corner_fraction
        self.corner_px = corner_px
        self.galaxy_shape_catalog = galaxy_shape_catalog

    def _color_table(self, key: str, colors: Mapping[str, Mapping[str, float]]) -> Tensor:
        """Colour parameters as a tensor ``3 c`` (mean, slope, scatter) in channel order."""
        rows = []
        for part in ("mean", "slope", "scatter"):
            values = colors.get(part, {})
            missing = [
                b for b in self.bands if b not in values and b != self.bands[self.reference_index]
            ]
            if missing:
                raise BlissConfigError(
                    f"{key}.{part} has no entry for bands {missing}; give a magnitude offset from "
                    f"the reference band for every band of the survey {list(self.bands)}."
                )
            rows.append(
                [
                    0.0 if i == self.reference_index else float(values[b])
                    for i, b in enumerate(self.bands)
                ]
            )
        table = torch.tensor(rows)
        if (table[2] < 0).any():
            raise BlissConfigError(f"{key}.scatter has a negative entry; expected scatters >= 0.")
        return table

    def sample(
        self, n_images: int, n_tiles_h: int, n_tiles_w: int, generator: torch.Generator
    ) -> TileCatalog:
        """Draw tile catalogs.

        Args:
            n_images: batch size ``b``.
            n_tiles_h: tile rows ``ht``.
            n_tiles_w: tile columns ``wt``.
            generator: the random stream (seed it for reproducible draws).

        Returns:
            A :class:`TileCatalog` with keys ``n_sources``, ``locs``, ``source_type``, ``fluxes``
            (nanomaggies, ``d = c``) and every key of :data:`GALAXY_KEYS` (zeros for stars).
            Shapes ``b ht wt m d``.
        """
        shape = (n_images, n_tiles_h, n_tiles_w, self.max_sources)
        rate = self.tile_rates(n_images, n_tiles_h, n_tiles_w, generator)
        n_sources = torch.poisson(rate, generator=generator).clamp(max=self.max_sources).long()
        slots = torch.arange(self.max_sources)
        is_on = slots < rearrange(n_sources, "b ht wt -> b ht wt 1")
        # draw attributes for the present sources only: at survey densities ~1 % of the slots
        # hold one, and drawing every slot cost more than rendering the images
        image = is_on.nonzero()[:, 0]  # the image of each present source, in mask order
        sources = self._sample_sources(image, n_images, generator)
        data: dict[str, Tensor] = {"n_sources": n_sources}
        for key, values in sources.items():
            data[key] = values.new_zeros(*shape, values.shape[-1])
            data[key][is_on] = values
        if self.max_sources == 1:
            return TileCatalog(self.tile_slen, data)
        # slots ordered by decreasing reference flux, as TileCatalog requires
        ref_flux = data["fluxes"][..., self.reference_index]
        order = torch.sort(-torch.where(is_on, ref_flux, -1.0), dim=-1, stable=True).indices
        return TileCatalog(
            self.tile_slen,
            {
                k: v if k == "n_sources" else torch.gather(v, 3, order.unsqueeze(-1).expand_as(v))
                for k, v in data.items()
            },
        )

    def tile_rates(
        self, n_images: int, n_tiles_h: int, n_tiles_w: int, generator: torch.Generator
    ) -> Tensor:
        """Mean number of sources of every tile, ``b ht wt``: the same everywhere here.

        Subclasses with a density that varies across the sky override this (and only this).
        """
        return torch.full((n_images, n_tiles_h, n_tiles_w), self.mean_sources_per_tile)

    def _sample_sources(
        self, image: Tensor, n_images: int, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Attributes of sources in images ``image`` (``n``, of ``n_images``).

        Returns ``locs`` (``n 2``), ``fluxes`` (``n c``), the rest ``n 1``.
        """
        n = image.numel()
        shape = (n,)
        locs = torch.rand(*shape, 2, generator=generator)
        if self.corner_fraction:
            cornered = torch.rand(shape, generator=generator) < self.corner_fraction
            # any of the tile's four corners, (0, corner_px] inside it (locs stay in [0, 1))
            corner = torch.randint(0, 2, (n, 2), generator=generator).float()
            inset = (1.0 - torch.rand(n, 2, generator=generator)) * self.corner_px / self.tile_slen
            locs = torch.where(cornered[:, None], corner + (1.0 - 2.0 * corner) * inset, locs)
        is_galaxy = torch.rand(shape, generator=generator) < self.prob_galaxy
        ref_flux = torch.where(
            is_galaxy,
            _sample_power_law(shape, self.galaxy_flux, generator),
            self._star_reference_flux(image, n_images, generator),
        )
        galaxy = rearrange(is_galaxy.float(), "n -> n 1")
        if self.galaxy_shape_catalog is None:
            shapes = self._sample_galaxy_shapes(shape, generator)
        else:
            ref_mag = 22.5 - 2.5 * torch.log10(ref_flux)
            shapes = self.galaxy_shape_catalog.sample(ref_mag, generator)
        fluxes = self._sample_fluxes(ref_flux, is_galaxy, generator)
        if "colors" in shapes:
            drawn = rearrange(ref_flux, "n -> n 1") * torch.pow(10.0, -0.4 * shapes["colors"])
            fluxes = torch.where(rearrange(is_galaxy, "n -> n 1"), drawn, fluxes)
        return {
            "locs": locs,
            "source_type": galaxy,
            "fluxes": fluxes,
            **{key: shapes[key] * galaxy for key in GALAXY_KEYS},
            # what a catalog draws beyond shapes and colours (a redshift) belongs to galaxies
            **{
                key: value * galaxy
                for key, value in shapes.items()
                if key not in GALAXY_KEYS and key != "colors"
            },
        }

    def _star_reference_flux(
        self, image: Tensor, n_images: int, generator: torch.Generator
    ) -> Tensor:
        """Reference-band fluxes of stars in images ``image`` (``n``): the power law ``star_flux``.

        Subclasses whose luminosity function changes from image to image override this.
        """
        return _sample_power_law(image.shape, self.star_flux, generator)

    def _sample_fluxes(
        self, ref_flux: Tensor, is_galaxy: Tensor, generator: torch.Generator
    ) -> Tensor:
        """Fluxes in every band from the reference flux and colours. Shape ``... c``."""
        n_bands = len(self.bands)
        latent = torch.randn(*ref_flux.shape, 1, generator=generator)
        scatter = torch.randn(*ref_flux.shape, n_bands, generator=generator)
        table = torch.where(
            rearrange(is_galaxy, "... -> ... 1 1"), self.galaxy_colors, self.star_colors
        )  # ... 3 c
        mean, slope, spread = table.unbind(-2)
        color = mean + slope * latent + spread * scatter
        color[..., self.reference_index] = 0.0
        return rearrange(ref_flux, "... -> ... 1") * torch.pow(10.0, -0.4 * color)

    def _sample_galaxy_shapes(
        self, shape: tuple[int, ...], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Bulge + disk parameters, each ``... 1`` for ``shape`` ``...``."""
        config = self.galaxy_shape
        q_min = config["q_min"]

        def uniform(low: float, high: float) -> Tensor:
            return low + (high - low) * torch.rand(*shape, 1, generator=generator)

        def log_normal(spec: Mapping[str, float]) -> Tensor:
            draw = spec["median"] * torch.exp(
                spec["sigma"] * torch.randn(*shape, 1, generator=generator)
            )
            return draw.clamp(spec["min"], spec["max"])

        return {
            "disk_frac": uniform(*config["disk_frac"]),
            "beta_rad": uniform(0.0, math.pi),
            "disk_q": uniform(q_min, 1.0),
            "disk_hlr_arcsec": log_normal(config["disk_hlr_arcsec"]),
            "bulge_q": uniform(q_min, 1.0),
            "bulge_hlr_arcsec": log_normal(config["bulge_hlr_arcsec"]),
        }


def _sample_power_law(
    shape: tuple[int, ...], spec: Mapping[str, float], generator: torch.Generator
) -> Tensor:
    """Inverse-CDF draw from ``p(F) ~ F^-(alpha + 1)`` on ``[min_nmgy, max_nmgy]``."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return power_law_quantile(u, spec["min_nmgy"], spec["max_nmgy"], spec["alpha"]).float()


def power_law_quantile(u: Tensor, low: float, high: float, alpha: Tensor | float) -> Tensor:
    """The ``u`` quantile of ``p(F) ~ F^-(alpha + 1)`` on ``[low, high]`` (``alpha`` broadcasts)."""
    tail = 1.0 - (high / low) ** (-alpha)
    return low * (1.0 - u * tail) ** (-1.0 / alpha)


def _check_power_law(key: str, spec: Mapping[str, float]) -> dict[str, float]:
    expected = {"min_nmgy", "max_nmgy", "alpha"}
    if set(spec) != expected:
        raise BlissConfigError(
            f"{key} has keys {sorted(spec)}; expected exactly {sorted(expected)}."
        )
    if not 0 < spec["min_nmgy"] < spec["max_nmgy"]:
        raise BlissConfigError(
            f"{key}: min_nmgy={spec['min_nmgy']}, max_nmgy={spec['max_nmgy']}; expected "
            "0 < min_nmgy < max_nmgy."
        )
    if not spec["alpha"] > 0:
        raise BlissConfigError(f"{key}.alpha={spec['alpha']}; expected a positive power-law index.")
    return {k: float(v) for k, v in spec.items()}


_DEFAULT_SHAPE = {
    "disk_hlr_arcsec": {"median": 0.8, "sigma": 0.5, "min": 0.2, "max": 5.0},
    "bulge_hlr_arcsec": {"median": 0.5, "sigma": 0.5, "min": 0.1, "max": 3.0},
    "q_min": 0.2,
    "disk_frac": (0.0, 1.0),
}


def _check_shape_config(spec: Mapping) -> dict:
    config = {**_DEFAULT_SHAPE, **spec}
    unknown = set(config) - set(_DEFAULT_SHAPE)
    if unknown:
        raise BlissConfigError(
            f"prior.galaxy_shape has unknown keys {sorted(unknown)}; expected {sorted(_DEFAULT_SHAPE)}."
        )
    if not 0 < config["q_min"] <= 1:
        raise BlissConfigError(
            f"prior.galaxy_shape.q_min={config['q_min']}; expected 0 < q_min <= 1."
        )
    low, high = (float(v) for v in config["disk_frac"])
    if not 0 <= low <= high <= 1:
        raise BlissConfigError(
            f"prior.galaxy_shape.disk_frac={list(config['disk_frac'])}; expected [low, high] "
            "with 0 <= low <= high <= 1 (the disk's share of a galaxy's flux, drawn uniformly)."
        )
    config["disk_frac"] = (low, high)
    for key in ("disk_hlr_arcsec", "bulge_hlr_arcsec"):
        radius = config[key]
        if not (0 < radius["min"] <= radius["median"] <= radius["max"] and radius["sigma"] >= 0):
            raise BlissConfigError(
                f"prior.galaxy_shape.{key}={dict(radius)}; expected 0 < min <= median <= max and "
                "sigma >= 0."
            )
    return config
