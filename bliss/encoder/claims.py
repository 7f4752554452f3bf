"""Which true sources each colour group is trained to claim when tiles see past their borders.

By default a tile's posterior covers the sources inside the tile. With a margin
(``encoder.tiling.margin_px``) it covers the tile widened by that many pixels on every side, and
in the groups' visiting order a true source is the target of the first tile able to hold it: its
own tile if that tile is in the group, otherwise the nearest tile of the group whose widened area
contains it. A tile takes the sources inside it before those in its margin, brightest first, up
to ``max_sources``.

A group's targets are claimed by the catalog the group decides. Under teacher forcing that
catalog is the targets themselves. Under self-conditioning it is drawn from the posterior: each
drawn source claims the nearest unclaimed true source within the matching distance, and a
target no drawn source claimed passes to the next group whose widened tiles contain it. The
later groups so learn to take up a source their neighbours declined, which teacher forcing never
shows them, since there the neighbours hold every source they own (the star on a four-tile
corner of issue 13).
"""

import torch
from torch import Tensor

from bliss.catalog import TileCatalog
from bliss.catalog.full import sort_within_tiles

__all__ = ["SourcePool"]

_NEIGHBOURS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
_OWN = _NEIGHBOURS.index((0, 0))


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
        # the pool index of each true slot (to_full_catalog keeps tile raster order, then slots)
        on = truth.is_on_mask
        index = on.flatten(1).long().cumsum(1).view_as(on) - 1
        self.slot_index = torch.where(on, index, -1)  # b ht wt m
        self.slot_plocs = truth.plocs()  # b ht wt m 2
        self.claimed = ~self.full.is_on_mask  # padding counts as taken
        self.position = self.full["plocs"] / self.tile_slen  # b n 2, tile units
        own = torch.floor(self.position).long()
        self.own = torch.stack(
            [own[..., 0].clamp(0, self.shape[0] - 1), own[..., 1].clamp(0, self.shape[1] - 1)], -1
        )

    def targets(self, in_group: Tensor) -> TileCatalog:
        """The unclaimed sources the tiles of a group must hold.

        Args:
            in_group: the group's tiles (``ht wt``, bool).

        Returns:
            The targets as a tile catalog (empty outside the group; ``locs`` relative to the tile
            that holds them).
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
        return self.full.to_tile_catalog(
            self.tile_slen, self.max_sources, self.ref_band, tile_index=tile_index
        )

    def claim(self, decided: TileCatalog, in_group: Tensor, radius_px: float) -> None:
        """Mark as claimed the true sources the group's decided catalog holds.

        Each source the group decided claims the nearest unclaimed true source within
        ``radius_px`` of where it put it, wherever that source's tile is: a drawn source near a
        tile border holds the true one even when the truth lies just past the tile's reach, so
        the later groups learn not to hold it again. A teacher-forced catalog (the targets
        themselves) claims exactly its targets. The search covers the 3 x 3 tiles around each
        decided source, which reaches ``radius_px`` when ``radius_px + margin_px`` is at most a
        tile (1 + 0.5 px on the 2 px crowded tiles, say).

        Args:
            decided: the catalog of the group's tiles (``b ht wt m``, other tiles ignored).
            in_group: the group's tiles (``ht wt``, bool).
            radius_px: how far a decided source may be from the true one it claims, pixels.
        """
        if self.claimed.shape[1] == 0:  # no true source in the batch: nothing to claim
            return
        on = decided.is_on_mask & in_group[None, :, :, None]  # b ht wt m
        candidates = _neighbourhood(self.slot_index, -1)  # b ht wt k, k = 9 m
        positions = _neighbourhood(self.slot_plocs, 0.0)  # b ht wt k 2
        batch = torch.arange(on.shape[0], device=on.device).view(-1, 1, 1, 1)
        free = (candidates >= 0) & ~self.claimed[batch, candidates.clamp(min=0)]
        offsets = decided.plocs().unsqueeze(-2) - positions.unsqueeze(-3)  # b ht wt m k 2
        distance = offsets.norm(dim=-1)
        distance = torch.where(free.unsqueeze(-2) & on.unsqueeze(-1), distance, torch.inf)
        nearest, choice = distance.min(-1)  # b ht wt m
        hit = nearest <= radius_px
        chosen = torch.gather(candidates, -1, choice)
        self.claimed[batch.expand_as(chosen)[hit], chosen[hit]] = True


def _neighbourhood(value: Tensor, fill: float) -> Tensor:
    """The slots of each tile's 3 x 3 neighbourhood: ``b ht wt m ...`` -> ``b ht wt (9 m) ...``."""
    b, n_h, n_w = value.shape[:3]
    shape = (b, n_h + 2, n_w + 2, *value.shape[3:])
    padded = torch.full(shape, fill, dtype=value.dtype, device=value.device)
    padded[:, 1:-1, 1:-1] = value
    views = [padded[:, dr : dr + n_h, dc : dc + n_w] for dr in range(3) for dc in range(3)]
    return torch.cat(views, dim=3)
