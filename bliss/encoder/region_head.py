"""The head that maps tile features to the posterior of a region quantity (image or coarse tile).

Per-tile features are first mixed and lifted per tile, then averaged over the tiles of each region
(over the whole image for an image-level quantity), and a small per-region network gives the
parameters. The average is the right summary for a shear: an estimate pooled over the galaxies
of a region, whose precision grows with their number, which the network can read from the pooled
features themselves. Averaging also makes the head independent of the image size.
"""

import torch
import torch.nn.functional as F  # noqa: N812
from einops import rearrange
from torch import Tensor, nn

from bliss.encoder.layers import ConvBlock

__all__ = ["RegionHead"]


class RegionHead(nn.Module):
    """Tile features (``b f ht wt``) -> raw parameters of every region (``b hr wr p``).

    Args:
        feature_width: channels of the feature extractor.
        width: hidden channels.
        n_params: raw parameters per region.
        tiles_per_region: region side in tiles, or None for the whole image.
        norm: normalisation of the convolution blocks (see :mod:`bliss.encoder.layers`).
    """

    def __init__(
        self,
        feature_width: int,
        width: int,
        n_params: int,
        tiles_per_region: int | None,
        norm: str = "layer",
    ) -> None:
        super().__init__()
        self.tiles_per_region = tiles_per_region
        self.local = nn.Sequential(
            ConvBlock(feature_width, width, norm=norm),
            nn.Conv2d(width, width, 1),
            nn.SiLU(),
            nn.Conv2d(width, width, 1),
        )
        self.pooled = nn.Sequential(nn.Conv2d(width, width, 1), nn.SiLU())
        self.head = nn.Conv2d(width, n_params, 1)

    def forward(self, features: Tensor) -> Tensor:
        """``b f ht wt`` -> ``b hr wr p`` (float32, also under mixed precision)."""
        local = self.local(features)
        if self.tiles_per_region is None:
            pooled = local.mean(dim=(-2, -1), keepdim=True)
        else:
            pooled = F.avg_pool2d(local, self.tiles_per_region)
        hidden = self.pooled(pooled)
        with torch.autocast(hidden.device.type, enabled=False):
            params = self.head(hidden.float())
        return rearrange(params, "b p hr wr -> b hr wr p")
