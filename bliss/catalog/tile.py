"""Tile catalogs: at most ``m`` sources in each square tile of ``tile_slen`` pixels."""

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from einops import rearrange, repeat
from torch import Tensor

from bliss.catalog.base import CatalogMapping
from bliss.catalog.shapes import check_shape
from bliss.errors import BlissValueError

if TYPE_CHECKING:
    from bliss.catalog.full import FullCatalog

__all__ = ["GALAXY_KEYS", "SERSIC_KEY", "TileCatalog"]

#: Galaxy shape keys, each ``b ht wt m 1``: disk flux fraction in [0, 1]; position angle in
#: radians in [0, pi), counter-clockwise from the +col axis towards +row; axis ratios (minor /
#: major) in (0, 1]; half-light radii in arcsec of the circular profile before it is sheared to
#: axis ratio q (GalSim's convention: the major semi-axis is ``hlr / sqrt(q)``).
GALAXY_KEYS = ("disk_frac", "beta_rad", "disk_q", "disk_hlr_arcsec", "bulge_q", "bulge_hlr_arcsec")
#: catalog key of a per-galaxy bulge Sersic index (``... 1``; GALAXY_KEYS' bulge is de Vaucouleurs
#: without it); the GalSim renderer draws it, for test sets off the training profile family
SERSIC_KEY = "bulge_sersic_n"


class TileCatalog(CatalogMapping):
    """Per-tile source parameters.

    Slot ``j`` of a tile holds a source when ``j < n_sources``; empty slots hold zeros. Sources in
    a tile are ordered by decreasing reference-band flux, so slot order is consistent between the
    prior, the encoder and conversions.

    Args:
        tile_slen: side of a tile in pixels.
        data: ``n_sources`` (shape ``b ht wt``, integer) and ``locs`` (``b ht wt m 2``, fraction of
            the tile, ``(row, col)``), plus any other per-source tensor ``b ht wt m d``.

    Raises:
        BlissValueError: ``n_sources`` or ``locs`` is missing, or ``tile_slen`` < 1.
        BlissShapeError: a tensor does not agree with ``b ht wt m``.

    Example:
        >>> import torch
        >>> cat = TileCatalog(4, {"n_sources": torch.tensor([[[1, 0]]]),
        ...                       "locs": torch.full((1, 1, 2, 1, 2), 0.5)})
        >>> cat.to_full_catalog()["plocs"].tolist()
        [[[2.0, 2.0]]]
    """

    def __init__(self, tile_slen: int, data: Mapping[str, Tensor]) -> None:
        if tile_slen < 1:
            raise BlissValueError(f"tile_slen={tile_slen}; expected a positive number of pixels.")
        for key in ("n_sources", "locs"):
            if key not in data:
                raise BlissValueError(f"TileCatalog got keys {sorted(data)}; `{key}` is required.")
        self.tile_slen = tile_slen
        sizes = check_shape("n_sources", data["n_sources"], "b ht wt")
        sizes = check_shape("locs", data["locs"], "b ht wt m 2", sizes)
        for key, value in data.items():
            if key not in ("n_sources", "locs"):
                check_shape(key, value, "b ht wt m d", sizes)
        self._data = {key: value for key, value in data.items()}
        self._data["n_sources"] = self._data["n_sources"].long()

    # ---- mapping interface -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Tensor]:
        """A shallow copy of the stored tensors."""
        return dict(self._data)

    def replace(self, **updates: Tensor) -> "TileCatalog":
        """A new catalog with some tensors replaced or added."""
        return TileCatalog(self.tile_slen, {**self._data, **updates})

    # ---- sizes and masks ---------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Number of images ``b``."""
        return self._data["n_sources"].shape[0]

    @property
    def n_tiles_h(self) -> int:
        """Number of tile rows ``ht``."""
        return self._data["n_sources"].shape[1]

    @property
    def n_tiles_w(self) -> int:
        """Number of tile columns ``wt``."""
        return self._data["n_sources"].shape[2]

    @property
    def max_sources(self) -> int:
        """Slots per tile ``m``."""
        return self._data["locs"].shape[3]

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self._data["locs"].device

    @property
    def is_on_mask(self) -> Tensor:
        """Which slots hold a source. Shape: ``b ht wt m`` (bool)."""
        slots = torch.arange(self.max_sources, device=self.device)
        return slots < rearrange(self._data["n_sources"], "b ht wt -> b ht wt 1")

    @property
    def galaxy_mask(self) -> Tensor:
        """Which slots hold a galaxy. Shape: ``b ht wt m`` (bool)."""
        if "source_type" not in self._data:
            return torch.zeros_like(self.is_on_mask)
        return self.is_on_mask & (rearrange(self._data["source_type"], "... 1 -> ...") > 0.5)

    @property
    def star_mask(self) -> Tensor:
        """Which slots hold a star. Shape: ``b ht wt m`` (bool)."""
        return self.is_on_mask & ~self.galaxy_mask

    def to(self, device: torch.device | str) -> "TileCatalog":
        """Move every tensor to ``device``."""
        return TileCatalog(self.tile_slen, {k: v.to(device) for k, v in self._data.items()})

    # ---- conversions -------------------------------------------------------------------------
    def plocs(self, locs: Tensor | None = None) -> Tensor:
        """Source positions in pixels of the whole image, ``(row, col)``. Shape: ``b ht wt m 2``.

        Args:
            locs: within-tile positions in tile units, shaped like the catalog's ``locs`` (e.g.
                a posterior quantile of them) [default: the catalog's own ``locs``].
        """
        locs = self["locs"] if locs is None else locs
        rows = torch.arange(self.n_tiles_h, device=self.device, dtype=locs.dtype)
        cols = torch.arange(self.n_tiles_w, device=self.device, dtype=locs.dtype)
        corner = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)
        corner = rearrange(corner, "ht wt two -> 1 ht wt 1 two")
        return (corner + locs) * self.tile_slen

    def to_full_catalog(self) -> "FullCatalog":
        """Convert to a :class:`FullCatalog` (sources in tile raster order, then slot order)."""
        from bliss.catalog.full import FullCatalog

        on = rearrange(self.is_on_mask, "b ht wt m -> b (ht wt m)")
        n_per_image = on.sum(dim=1)
        n_max = int(n_per_image.max()) if on.numel() else 0
        # stable sort puts the sources first while keeping raster order among them
        order = torch.sort((~on).int(), dim=1, stable=True).indices[:, :n_max]
        keep = torch.arange(n_max, device=self.device) < rearrange(n_per_image, "b -> b 1")
        data = {"n_sources": n_per_image}
        flat = {
            "plocs": self.plocs(),
            **{k: v for k, v in self.items() if k not in ("n_sources", "locs")},
        }
        for key, value in flat.items():
            value = rearrange(value, "b ht wt m d -> b (ht wt m) d")
            index = repeat(order, "b n -> b n d", d=value.shape[-1])
            gathered = torch.gather(value, 1, index)
            data[key] = torch.where(rearrange(keep, "b n -> b n 1"), gathered, 0)
        height_px = self.n_tiles_h * self.tile_slen
        width_px = self.n_tiles_w * self.tile_slen
        return FullCatalog(height_px, width_px, data)

    def mask_sources(self, keep: Tensor) -> "TileCatalog":
        """Remove sources where ``keep`` is False and re-pack the slots of each tile.

        Args:
            keep: which slots to keep. Shape: ``b ht wt m`` (bool).

        Returns:
            A catalog with the same ``m`` whose kept sources fill the first slots, in order.
        """
        check_shape("keep", keep, "b ht wt m", {"m": self.max_sources})
        keep = keep & self.is_on_mask
        order = torch.sort((~keep).int(), dim=-1, stable=True).indices
        n_kept = keep.sum(-1)
        filled = torch.arange(self.max_sources, device=self.device) < rearrange(
            n_kept, "b ht wt -> b ht wt 1"
        )
        data = {"n_sources": n_kept}
        for key, value in self.items():
            if key == "n_sources":
                continue
            index = repeat(order, "b ht wt m -> b ht wt m d", d=value.shape[-1])
            gathered = torch.gather(value, 3, index)
            data[key] = torch.where(rearrange(filled, "... -> ... 1"), gathered, 0)
        return TileCatalog(self.tile_slen, data)

    def filter_by_flux(
        self, min_flux: float = 0.0, max_flux: float = float("inf"), band: int = 0
    ) -> "TileCatalog":
        """Keep sources with ``min_flux <= fluxes[..., band] < max_flux`` (nanomaggies)."""
        flux = self["fluxes"][..., band]
        return self.mask_sources((flux >= min_flux) & (flux < max_flux))

    def crop_tiles(self, rows: slice, cols: slice) -> "TileCatalog":
        """The catalog of a rectangular block of tiles (locations stay tile-relative)."""
        return TileCatalog(self.tile_slen, {k: v[:, rows, cols] for k, v in self.items()})

    def __repr__(self) -> str:
        """Short description with sizes and keys."""
        return (
            f"TileCatalog(b={self.batch_size}, ht={self.n_tiles_h}, wt={self.n_tiles_w}, "
            f"m={self.max_sources}, tile_slen={self.tile_slen}, keys={self.keys()})"
        )
