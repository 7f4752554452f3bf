"""Checkerboard autoregressive tiling: colour groups of tiles inferred in turn.

Tiles are split into ``K`` colour groups; group ``k`` is inferred conditioned on the catalog
already determined for the groups before it, so a source on a tile border is claimed by the
first group that sees it and not again by its neighbour. The named schedules:

* ``K = 1`` (``"independent"``): every tile at once, no conditioning;
* ``K = 2`` (``"checkerboard"``): ``(row + col) mod 2``;
* ``K = 4`` (``"2x2"``): ``2 (row mod 2) + (col mod 2)``, so each group's 8 neighbours are in
  other groups and the last group sees all of them.
"""

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from bliss.catalog import TileCatalog
from bliss.encoder.layers import ConvBlock
from bliss.errors import BlissConfigError

__all__ = ["SCHEDULES", "CatalogContext", "ContextHead", "TilingSchedule", "tile_light"]

SCHEDULES = {1: "independent", 2: "checkerboard", 4: "2x2"}


class TilingSchedule:
    """Which colour group every tile belongs to, and in which order groups are inferred.

    Args:
        n_colors: ``K``, one of 1, 2, 4.
        randomize_order: during training, visit the groups in a random order each step.
        margin_px: how far past its border a tile may hold a source, pixels (less than a tile);
            a source there is held by the first tile visited that can hold it
            (:mod:`bliss.encoder.claims`). The ``locs`` factor's bounds must take it in.
        self_conditioning: the share of training steps whose later groups are conditioned on
            catalogs drawn from the posterior of the earlier ones instead of the truth, so that a
            source an earlier group declined becomes a later group's target.
    """

    def __init__(
        self,
        n_colors: int = 4,
        randomize_order: bool = False,
        margin_px: float = 0.0,
        self_conditioning: float = 0.0,
    ) -> None:
        if n_colors not in SCHEDULES:
            raise BlissConfigError(
                f"encoder.tiling.n_colors={n_colors}; expected one of {sorted(SCHEDULES)} "
                f"({', '.join(f'{k} = {v}' for k, v in SCHEDULES.items())})."
            )
        if margin_px < 0:
            raise BlissConfigError(
                f"encoder.tiling.margin_px={margin_px}; expected a distance >= 0 (pixels)."
            )
        if not 0 <= self_conditioning <= 1:
            raise BlissConfigError(
                f"encoder.tiling.self_conditioning={self_conditioning}; expected a share in [0, 1]."
            )
        self.n_colors = n_colors
        self.randomize_order = randomize_order
        self.margin_px = float(margin_px)
        self.self_conditioning = float(self_conditioning)

    @property
    def name(self) -> str:
        """The schedule's name."""
        return SCHEDULES[self.n_colors]

    def colors(self, n_tiles_h: int, n_tiles_w: int, device: torch.device | None = None) -> Tensor:
        """Colour of every tile. Shape ``ht wt`` (long)."""
        rows = torch.arange(n_tiles_h, device=device).view(-1, 1)
        cols = torch.arange(n_tiles_w, device=device).view(1, -1)
        if self.n_colors == 1:
            return torch.zeros(n_tiles_h, n_tiles_w, dtype=torch.long, device=device)
        if self.n_colors == 2:
            return (rows + cols) % 2
        return 2 * (rows % 2) + (cols % 2)

    def order(self, training: bool, generator: torch.Generator | None = None) -> list[int]:
        """The order in which colour groups are visited."""
        if training and self.randomize_order:
            return torch.randperm(self.n_colors, generator=generator).tolist()
        return list(range(self.n_colors))


class CatalogContext:
    """Encode the catalog of already-inferred tiles as tile-resolution input maps.

    Channels (all zero on unknown tiles): known flag, number of sources, number of galaxies,
    mean within-tile ``(row, col)`` of the sources, and ``asinh(total flux / flux_scale)`` per band.

    With ``spill_fwhm_px``, ``c`` more channels give, on every tile, ``asinh(light /
    flux_scale)`` of the light the known tiles' sources put inside that tile's pixels, each
    source drawn as a Gaussian of that FWHM (the survey's nominal PSF; galaxies as points). A
    source near a tile border lights its neighbours too; the per-tile summaries leave the head
    to work out how much, so a later colour group can take the light of a star its neighbour
    already holds for a second source (``benchmarks/bench_tile_corners.py``). These channels say
    it directly, on the known tiles and on the ones being decided.

    Args:
        n_bands: ``c``.
        flux_scale: nanomaggies at which the asinh flux channels turn logarithmic.
        spill_fwhm_px: FWHM (pixels) of the Gaussian the light channels draw sources with;
            None: no light channels.
    """

    def __init__(
        self, n_bands: int, flux_scale: float = 1.0, spill_fwhm_px: float | None = None
    ) -> None:
        if spill_fwhm_px is not None and not spill_fwhm_px > 0:
            raise BlissConfigError(
                f"encoder.context_spill_fwhm_px={spill_fwhm_px}; expected a FWHM > 0 pixels "
                "(or null for no light channels)."
            )
        self.n_bands = n_bands
        self.flux_scale = flux_scale
        self.spill_fwhm_px = spill_fwhm_px

    @property
    def n_channels(self) -> int:
        """Context channels ``k``."""
        return 5 + self.n_bands * (1 if self.spill_fwhm_px is None else 2)

    def __call__(self, catalog: TileCatalog, known: Tensor) -> Tensor:
        """Context maps.

        Args:
            catalog: the catalog (true during training, inferred during inference).
            known: which tiles' catalogs may be used. Shape ``b ht wt`` or ``ht wt`` (bool).

        Returns:
            Shape ``b k ht wt``.
        """
        on = catalog.is_on_mask.to(catalog["locs"].dtype)  # b ht wt m
        count = on.sum(-1)
        galaxies = catalog.galaxy_mask.to(on.dtype).sum(-1)
        mean_locs = (catalog["locs"] * on.unsqueeze(-1)).sum(-2) / count.clamp(min=1).unsqueeze(-1)
        flux = (catalog["fluxes"] * on.unsqueeze(-1)).sum(-2)
        maps = torch.cat(
            [
                torch.ones_like(count).unsqueeze(-1),
                count.unsqueeze(-1),
                galaxies.unsqueeze(-1),
                mean_locs,
                torch.asinh(flux / self.flux_scale),
            ],
            dim=-1,
        )
        known = known.to(maps.dtype)
        if known.ndim == 2:
            known = known.unsqueeze(0)
        maps = maps * known.unsqueeze(-1)
        if self.spill_fwhm_px is not None:
            light = tile_light(catalog, on * known.unsqueeze(-1), self.spill_fwhm_px)
            maps = torch.cat([maps, torch.asinh(light / self.flux_scale)], dim=-1)
        return rearrange(maps, "b ht wt k -> b k ht wt")


def tile_light(catalog: TileCatalog, weight: Tensor, fwhm_px: float) -> Tensor:
    """The light each tile's pixels receive from the catalog's sources drawn as Gaussians.

    Args:
        catalog: sources with ``locs`` and ``fluxes`` (``b ht wt m c``).
        weight: per slot, how much of it to draw (``b ht wt m``; 0 for empty or ignored slots).
        fwhm_px: the Gaussian's FWHM, pixels.

    Returns:
        Shape ``b ht wt c``: per tile and band, the sum over sources of flux times the share of
        the Gaussian inside the tile (separable: the share in its rows times that in its columns).
    """
    slen = catalog.tile_slen
    sigma = fwhm_px / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    # tiles further away than this get under ~3e-5 of a source's light (a little more from a margin)
    reach = math.ceil((4.0 * sigma + slen) / slen)
    position = catalog["locs"] * slen  # b ht wt m 2, pixels from the own tile's corner
    offsets = torch.arange(-reach, reach + 1, device=position.device, dtype=position.dtype)
    low = offsets * slen  # the corner of the tile `offset` tiles away, in the same frame
    edges = torch.stack([low, low + slen], -1)  # o 2 (first and last pixel edge)
    # ndtr at each edge, per offset and axis: b ht wt m o 2(axis) 2(edge)
    within = torch.special.ndtr((edges[:, None, :] - position[..., None, :, None]) / sigma)
    share = within[..., 1] - within[..., 0]  # b ht wt m o 2: share in that tile's rows / cols
    flux = catalog["fluxes"] * weight.unsqueeze(-1)  # b ht wt m c
    b, n_h, n_w, m, c = flux.shape
    n_off = offsets.numel()
    # light each tile sends to the tile (i, j) offsets away: b ht wt c o o, as one batched
    # product over the slots; contiguous operands, or bmm (and einsum) loop over the tiles
    by_row = flux.unsqueeze(-1) * share[..., 0].unsqueeze(-2)  # b ht wt m c o
    by_row = by_row.reshape(-1, m, c * n_off).transpose(1, 2).contiguous()
    sent = torch.bmm(by_row, share[..., 1].reshape(-1, m, n_off).contiguous())
    sent = sent.view(b, n_h, n_w, c, n_off, n_off)
    out = flux.new_zeros(b, n_h + 2 * reach, n_w + 2 * reach, c)
    for i in range(n_off):
        for j in range(n_off):
            out[:, i : i + n_h, j : j + n_w] += sent[..., i, j]
    return out[:, reach : reach + n_h, reach : reach + n_w]


class ContextHead(nn.Module):
    """Tile features + catalog context + current group -> raw posterior parameters of every tile.

    The tiles of the group being decided are marked explicitly (a map that is 1 on them), so the
    network never has to infer a tile's role from its position; a network that does (for
    example from how far the image edges are) breaks on images larger than its training images.
    Two 3 x 3 convolutions mix each tile with its 8 neighbours; a 1 x 1 convolution gives the
    parameters. That last convolution always runs in float32, also under mixed-precision autocast
    (``trainer.precision=bf16-mixed``): bfloat16 keeps 8 bits of mantissa, which would round a
    log-flux mean near 5 to steps of 0.03 (3 % in flux).

    Args:
        feature_width: channels of the feature extractor.
        context_channels: channels of :class:`CatalogContext`.
        width: hidden channels.
        n_params: raw parameters per tile.
        norm: normalisation layer (see :mod:`bliss.encoder.layers`).
    """

    def __init__(
        self,
        feature_width: int,
        context_channels: int,
        width: int,
        n_params: int,
        norm: str = "layer",
    ) -> None:
        super().__init__()
        self.features = nn.Conv2d(feature_width, width, 1)
        self.context = nn.Conv2d(context_channels, width, 1)
        self.current = nn.Conv2d(1, width, 1)
        nn.init.zeros_(self.current.weight)  # starts as a no-op, learns the role of the marker
        nn.init.zeros_(self.current.bias)
        self.body = nn.Sequential(
            ConvBlock(width, width, norm=norm), ConvBlock(width, width, norm=norm)
        )
        self.head = nn.Conv2d(width, n_params, 1)

    def forward(self, features: Tensor, context: Tensor, current: Tensor) -> Tensor:
        """``b f ht wt``, ``b k ht wt`` and the current group's tiles (``ht wt``) -> ``b ht wt p``.

        Outside training, when the current group is a lattice of every other row and column (the
        ``2x2`` schedule), only the current tiles are computed after the first 3 x 3 block (the
        others come back as zeros): the same numbers for a quarter of the work, since the
        normalisations act per tile once not training.
        """
        marker = current.to(features.dtype).expand(features.shape[0], 1, *current.shape[-2:])
        mixed = self.features(features) + self.context(context) + self.current(marker)
        offset = None if self.training else _lattice_offset(current)
        if offset is None:
            return rearrange(self._params(self.body(mixed)), "b p ht wt -> b ht wt p")
        first, second = self.body
        conv, *rest = second
        row, col = offset
        hidden = nn.functional.pad(first(mixed), (1, 1, 1, 1))[..., row:, col:]
        hidden = nn.functional.conv2d(hidden, conv.weight, conv.bias, stride=2)
        for layer in rest:
            hidden = layer(hidden)
        b, _, n_h, n_w = mixed.shape
        out = mixed.new_zeros(b, self.head.out_channels, n_h, n_w, dtype=torch.float32)
        out[..., row::2, col::2] = self._params(hidden)
        return rearrange(out, "b p ht wt -> b ht wt p")

    def _params(self, hidden: Tensor) -> Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            return self.head(hidden.float())


def _lattice_offset(current: Tensor) -> tuple[int, int] | None:
    """``(row, col)`` if ``current`` (``ht wt``) is every other tile from there, else None."""
    if current.ndim != 2 or not current.any():
        return None
    row, col = (int(i) for i in current.nonzero()[0])
    if row > 1 or col > 1:
        return None
    lattice = torch.zeros_like(current)
    lattice[row::2, col::2] = True
    return (row, col) if torch.equal(lattice, current) else None
