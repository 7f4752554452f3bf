"""Full catalogs: a padded list of sources per image."""

import warnings
from collections.abc import Mapping

import torch
from einops import rearrange, repeat
from torch import Tensor

from bliss.catalog.base import CatalogMapping
from bliss.catalog.shapes import check_shape
from bliss.catalog.tile import TileCatalog
from bliss.errors import BlissValueError, BlissWarning

__all__ = ["FullCatalog", "concat_full_catalogs", "sort_within_tiles"]


class FullCatalog(CatalogMapping):
    """Sources of each image as a padded list.

    Args:
        height_px: image height in pixels.
        width_px: image width in pixels.
        data: ``n_sources`` (shape ``b``), ``plocs`` (``b n 2``, pixels, ``(row, col)``, origin at
            the image corner) and any other per-source tensor ``b n d``. Entries beyond
            ``n_sources[i]`` are padding.

    Example:
        >>> import torch
        >>> cat = FullCatalog(8, 8, {"n_sources": torch.tensor([1]),
        ...                          "plocs": torch.tensor([[[5.0, 2.5]]]),
        ...                          "fluxes": torch.tensor([[[3.0]]])})
        >>> tiles = cat.to_tile_catalog(tile_slen=4, max_sources=1)
        >>> tiles["n_sources"].tolist()
        [[[0, 0], [1, 0]]]
    """

    def __init__(self, height_px: int, width_px: int, data: Mapping[str, Tensor]) -> None:
        for key in ("n_sources", "plocs"):
            if key not in data:
                raise BlissValueError(f"FullCatalog got keys {sorted(data)}; `{key}` is required.")
        sizes = check_shape("n_sources", data["n_sources"], "b")
        sizes = check_shape("plocs", data["plocs"], "b n 2", sizes)
        for key, value in data.items():
            if key not in ("n_sources", "plocs"):
                check_shape(key, value, "b n d", sizes)
        self.height_px = height_px
        self.width_px = width_px
        self._data = dict(data)
        self._data["n_sources"] = self._data["n_sources"].long()

    @property
    def batch_size(self) -> int:
        """Number of images ``b``."""
        return self._data["n_sources"].shape[0]

    @property
    def max_n_sources(self) -> int:
        """Padded length ``n``."""
        return self._data["plocs"].shape[1]

    @property
    def is_on_mask(self) -> Tensor:
        """Which entries are real sources. Shape: ``b n`` (bool)."""
        slots = torch.arange(self.max_n_sources, device=self["plocs"].device)
        return slots < rearrange(self["n_sources"], "b -> b 1")

    def to(self, device: torch.device | str) -> "FullCatalog":
        """Move every tensor to ``device``."""
        return FullCatalog(
            self.height_px, self.width_px, {k: v.to(device) for k, v in self._data.items()}
        )

    def select(self, keep: Tensor) -> "FullCatalog":
        """Keep the sources where ``keep`` is True, re-packed to the front.

        Args:
            keep: shape ``b n`` (bool).
        """
        check_shape("keep", keep, "b n", {"b": self.batch_size, "n": self.max_n_sources})
        keep = keep & self.is_on_mask
        n_kept = keep.sum(1)
        n_max = int(n_kept.max()) if keep.numel() else 0
        order = torch.sort((~keep).int(), dim=1, stable=True).indices[:, :n_max]
        filled = torch.arange(n_max, device=keep.device) < rearrange(n_kept, "b -> b 1")
        data = {"n_sources": n_kept}
        for key, value in self.items():
            if key == "n_sources":
                continue
            index = repeat(order, "b n -> b n d", d=value.shape[-1])
            data[key] = torch.where(
                rearrange(filled, "b n -> b n 1"), torch.gather(value, 1, index), 0
            )
        return FullCatalog(self.height_px, self.width_px, data)

    def filter_by_mag(
        self, min_mag: float = -float("inf"), max_mag: float = float("inf"), band: int = 0
    ) -> "FullCatalog":
        """Keep sources with ``min_mag <= mag[band] < max_mag`` (AB magnitudes)."""
        from bliss.catalog.convert import nmgy_to_mag

        mag = nmgy_to_mag(self["fluxes"][..., band])
        return self.select((mag >= min_mag) & (mag < max_mag))

    def crop(self, top: int, bottom: int, left: int, right: int) -> "FullCatalog":
        """Sources inside rows ``[top, bottom)`` and cols ``[left, right)``, shifted to the crop."""
        rows, cols = self["plocs"].unbind(-1)
        inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
        cropped = self.select(inside)
        offset = torch.tensor([top, left], dtype=cropped["plocs"].dtype)
        data = dict(cropped.items())
        data["plocs"] = torch.where(
            rearrange(cropped.is_on_mask, "b n -> b n 1"), data["plocs"] - offset, 0
        )
        return FullCatalog(bottom - top, right - left, data)

    def to_tile_catalog(
        self,
        tile_slen: int,
        max_sources: int,
        ref_band: int = 0,
        *,
        warn_on_drop: bool = True,
        tile_index: Tensor | None = None,
    ) -> TileCatalog:
        """Assign sources to tiles; within a tile, order by decreasing ``fluxes[..., ref_band]``.

        Sources outside the image are dropped. When a tile holds more than ``max_sources``, the
        faintest are dropped (with a :class:`BlissWarning` unless ``warn_on_drop`` is False).

        Args:
            tile_slen: tile side, pixels.
            max_sources: slots per tile.
            ref_band: band whose flux orders the sources of a tile.
            warn_on_drop: warn when a tile overflows.
            tile_index: the ``(row, col)`` tile of each source (``b n 2``, long) when it is not
                the tile that contains it (a tile that also holds sources beyond its border);
                ``locs`` are then relative to that tile and may lie outside ``[0, 1]``. Sources
                with a negative index are dropped [default: the containing tile].

        Returns:
            A :class:`TileCatalog` with ``ht = ceil(height_px / tile_slen)`` tile rows.
        """
        n_tiles_h = -(-self.height_px // tile_slen)
        n_tiles_w = -(-self.width_px // tile_slen)
        b, n = self.batch_size, self.max_n_sources
        plocs = self["plocs"]
        if tile_index is None:
            tile_index = torch.div(plocs, tile_slen, rounding_mode="floor").long()
        else:
            check_shape("tile_index", tile_index, "b n 2", {"b": b, "n": n})
        rows, cols = tile_index.unbind(-1)
        inside = (
            self.is_on_mask & (rows >= 0) & (rows < n_tiles_h) & (cols >= 0) & (cols < n_tiles_w)
        )
        n_tiles = n_tiles_h * n_tiles_w
        flat_tile = torch.where(inside, rows * n_tiles_w + cols, n_tiles)  # n_tiles = "outside"
        if "fluxes" in self:
            brightness = self["fluxes"][..., ref_band]
        else:
            brightness = torch.zeros(b, n, device=plocs.device)
        order, rank = sort_within_tiles(flat_tile, -brightness)
        sorted_tile = torch.gather(flat_tile, 1, order)
        valid = (sorted_tile < n_tiles) & (rank < max_sources)
        if warn_on_drop and bool(((sorted_tile < n_tiles) & (rank >= max_sources)).any()):
            warnings.warn(
                f"some tiles hold more than max_sources={max_sources} sources; the faintest were "
                "dropped. Raise max_sources or use smaller tiles to keep them.",
                BlissWarning,
                stacklevel=2,
            )
        batch_idx = torch.arange(b, device=plocs.device).view(b, 1).expand(b, n)[valid]
        tile_flat = sorted_tile[valid]
        slot = rank[valid]
        tile_r = tile_flat // n_tiles_w
        tile_c = tile_flat % n_tiles_w
        n_sources = torch.zeros(b, n_tiles_h, n_tiles_w, dtype=torch.long, device=plocs.device)
        n_sources.index_put_((batch_idx, tile_r, tile_c), torch.ones_like(slot), accumulate=True)
        data: dict[str, Tensor] = {"n_sources": n_sources}
        src = torch.gather(repeat(torch.arange(n, device=plocs.device), "n -> b n", b=b), 1, order)[
            valid
        ]
        for key, value in self.items():
            if key == "n_sources":
                continue
            out_key = "locs" if key == "plocs" else key
            out = torch.zeros(
                b,
                n_tiles_h,
                n_tiles_w,
                max_sources,
                value.shape[-1],
                dtype=value.dtype,
                device=value.device,
            )
            picked = value[batch_idx, src]
            if key == "plocs":
                corner = torch.stack([tile_r, tile_c], dim=-1).to(value.dtype)
                picked = picked / tile_slen - corner
            out[batch_idx, tile_r, tile_c, slot] = picked
            data[out_key] = out
        return TileCatalog(tile_slen, data)

    def __repr__(self) -> str:
        """Short description with sizes and keys."""
        return (
            f"FullCatalog(b={self.batch_size}, n={self.max_n_sources}, "
            f"{self.height_px}x{self.width_px} px, keys={self.keys()})"
        )


def sort_within_tiles(flat_tile: Tensor, *keys: Tensor) -> tuple[Tensor, Tensor]:
    """Sources ordered by tile, then by ``keys`` (ascending, the first key most significant).

    Args:
        flat_tile: each source's flat tile index (``b n``, long).
        keys: per-source sort keys (``b n`` each).

    Returns:
        ``order`` (``b n``: source indices in sorted order) and ``rank`` (``b n``: the place of the
        ``i``-th sorted source within its tile, from 0).
    """
    b, n = flat_tile.shape
    order = torch.arange(n, device=flat_tile.device).expand(b, n)
    for key in (*reversed(keys), flat_tile):  # stable sorts, least significant key first
        order = torch.gather(
            order, 1, torch.sort(torch.gather(key, 1, order), dim=1, stable=True).indices
        )
    sorted_tile = torch.gather(flat_tile, 1, order)
    positions = torch.arange(n, device=flat_tile.device).expand(b, n)
    is_first = torch.ones_like(sorted_tile, dtype=torch.bool)
    is_first[:, 1:] = sorted_tile[:, 1:] != sorted_tile[:, :-1]
    run_start = torch.cummax(torch.where(is_first, positions, 0), dim=1).values
    return order, positions - run_start


def concat_full_catalogs(catalogs: list[FullCatalog]) -> FullCatalog:
    """Stack catalogs of the same image size along the batch, padding ``n`` to the longest."""
    if not catalogs:
        raise BlissValueError("concat_full_catalogs got an empty list; pass at least one catalog.")
    n_max = max(c.max_n_sources for c in catalogs)
    keys = catalogs[0].keys()
    data = {}
    for key in keys:
        parts = []
        for cat in catalogs:
            value = cat[key]
            if key != "n_sources":
                pad = torch.zeros(
                    value.shape[0],
                    n_max - value.shape[1],
                    value.shape[2],
                    dtype=value.dtype,
                    device=value.device,
                )
                value = torch.cat([value, pad], dim=1)
            parts.append(value)
        data[key] = torch.cat(parts, dim=0)
    return FullCatalog(catalogs[0].height_px, catalogs[0].width_px, data)
