"""Which true sources each colour group is trained to claim when tiles see past their borders.

By default a tile's posterior covers the sources inside the tile. With a margin
(``encoder.tiling.margin_px``) it covers the tile widened by that many pixels on every side, and
in the groups' visiting order a true source is the target of the first tile able to hold it: its
own tile if that tile is in the group, otherwise the nearest tile of the group whose widened area
contains it. A tile takes the sources inside it before those in its margin, brightest first, up
to ``max_sources``.

A group's targets are claimed by the catalog the group decides. Under teacher forcing that
catalog is the targets themselves. Under self-conditioning it is drawn from the posterior: a tile
claims its brightest targets up to the number of sources it drew, and a target it left passes to
the next group whose widened tiles contain it. The later groups so learn to take up a source
their neighbours declined, which teacher forcing never shows them, since there the neighbours
hold every source they own (the star on a four-tile corner of issue 13).
"""

import torch
from torch import Tensor

from bliss.catalog import TileCatalog
from bliss.catalog.full import FullCatalog, sort_within_tiles

__all__ = ["SourcePool"]

_NEIGHBOURS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
_OWN = _NEIGHBOURS.index((0, 0))
_INDEX_KEY = "pool_index"


class SourcePool:
    """The true sources of a batch, and which of them the groups visited so far claimed.

    Args:
        truth: the true tile catalog (``b ht wt m d``, ``locs`` in ``[0, 1]``).
        margin_px: how far past its border a tile may hold a source, pixels (less than a tile).
        ref_band: band whose flux orders the sources of a tile.
    """

    def __init__(self, truth: TileCatalog, margin_px: float = 0.0, ref_band: int = 0) -> None:
        self.tile_slen = truth.tile_slen
        self.max_sources = truth.max_sources
        self.shape = (truth.n_tiles_h, truth.n_tiles_w)
        self.margin = margin_px / truth.tile_slen
        self.ref_band = ref_band
        self.full = truth.to_full_catalog()
        self.claimed = ~self.full.is_on_mask  # padding counts as taken
        self.position = self.full["plocs"] / self.tile_slen  # b n 2, tile units
        own = torch.floor(self.position).long()
        self.own = torch.stack(
            [own[..., 0].clamp(0, self.shape[0] - 1), own[..., 1].clamp(0, self.shape[1] - 1)], -1
        )

    def targets(self, in_group: Tensor) -> tuple[TileCatalog, Tensor]:
        """The unclaimed sources the tiles of a group must hold.

        Args:
            in_group: the group's tiles (``ht wt``, bool).

        Returns:
            The targets as a tile catalog (empty outside the group; ``locs`` relative to the tile
            that holds them) and the pool index of the source in each slot (``b ht wt m``, -1 on
            empty slots).
        """
        n_h, n_w = self.shape
        offsets = torch.tensor(_NEIGHBOURS, device=self.own.device)
        candidate = self.own.unsqueeze(2) + offsets  # b n 9 2
        rows, cols = candidate.unbind(-1)
        in_grid = (rows >= 0) & (rows < n_h) & (cols >= 0) & (cols < n_w)
        grouped = in_group[rows.clamp(0, n_h - 1), cols.clamp(0, n_w - 1)] & in_grid
        relative = self.position.unsqueeze(2) - candidate.to(self.position.dtype)
        within = ((relative >= -self.margin) & (relative < 1 + self.margin)).all(-1)
        possible = grouped & within & ~self.claimed.unsqueeze(-1)
        # own tile first, then the nearest centre (the own tile is the nearest where possible)
        distance = ((relative - 0.5) ** 2).sum(-1)
        distance[..., _OWN] = -1.0
        best = torch.where(possible, distance, torch.inf).argmin(-1)  # b n
        assigned = possible.any(-1)
        chosen = torch.gather(candidate, 2, best[..., None, None].expand(-1, -1, 1, 2))[:, :, 0]
        flat_tile = torch.where(assigned, chosen[..., 0] * n_w + chosen[..., 1], n_h * n_w)
        brightness = self.full["fluxes"][..., self.ref_band] if "fluxes" in self.full else None
        keys = [(best != _OWN).long()]
        if brightness is not None:
            keys.append(-brightness)
        order, rank = sort_within_tiles(flat_tile, *keys)
        kept = torch.zeros_like(assigned)
        kept.scatter_(1, order, (rank < self.max_sources) & (torch.gather(assigned, 1, order)))
        tile_index = torch.where(kept.unsqueeze(-1), chosen, -1)
        b, n = kept.shape
        data = dict(self.full.items())
        data[_INDEX_KEY] = torch.arange(n, device=kept.device).expand(b, n).unsqueeze(-1).float()
        pool = FullCatalog(n_h * self.tile_slen, n_w * self.tile_slen, data)
        tiles = pool.to_tile_catalog(
            self.tile_slen, self.max_sources, self.ref_band, tile_index=tile_index
        )
        index = torch.where(tiles.is_on_mask, tiles[_INDEX_KEY][..., 0].round().long(), -1)
        target = {k: v for k, v in tiles.items() if k != _INDEX_KEY}
        return TileCatalog(self.tile_slen, target), index

    def claim(self, index: Tensor, n_decided: Tensor) -> None:
        """Mark as claimed the targets the decided catalog holds.

        Args:
            index: the pool index of each target slot, as :meth:`targets` gave it (``b ht wt m``).
            n_decided: sources the group's tiles decided (``b ht wt``): a tile claims its first
                (brightest) targets up to that number.
        """
        slots = torch.arange(index.shape[-1], device=index.device)
        taken = (index >= 0) & (slots < n_decided.unsqueeze(-1))
        batch = torch.arange(index.shape[0], device=index.device).view(-1, 1, 1, 1)
        self.claimed[batch.expand_as(index)[taken], index[taken]] = True
