"""The head that maps tile features to the posterior of a region quantity (image or coarse tile).

Per tile, a small network gives a value vector and an attention logit; each region pools the
values with softmax weights over its tiles, so that a few tiles (the galaxies of an image) can
carry the estimate however many empty tiles surround them, and adds the log of the summed
attention, which grows with how much the region holds, so the posterior's width can shrink with
it. A plain mean over tiles was tried first: on 128 px LSST-like images with ~15 galaxies in
1024 tiles, the shear head learned nothing in 900 steps (its output varied by 1e-4 between
images) while the galaxies' ellipticities were measured well (correlation 0.94 at i < 22.5).
A small per-region network gives the parameters. The head works for any image size.
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
        self.tiles = nn.Sequential(
            ConvBlock(feature_width, width, norm=norm),
            nn.Conv2d(width, width, 1),
            nn.SiLU(),
            nn.Conv2d(width, width + 1, 1),  # values and one attention logit
        )
        self.regions = nn.Sequential(nn.Conv2d(width + 1, width, 1), nn.SiLU())
        self.head = nn.Conv2d(width, n_params, 1)

    def forward(self, features: Tensor) -> Tensor:
        """``b f ht wt`` -> ``b hr wr p`` (float32, also under mixed precision)."""
        out = self.tiles(features).float()
        values, logits = out[:, :-1], out[:, -1:]
        pooled, log_mass = self._attend(values, logits)
        hidden = self.regions(torch.cat([pooled, log_mass], dim=1))
        with torch.autocast(hidden.device.type, enabled=False):
            params = self.head(hidden.float())
        return rearrange(params, "b p hr wr -> b hr wr p")

    def _attend(self, values: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Softmax-weighted mean of ``values`` over each region, and log-sum-exp of ``logits``."""
        size = self.tiles_per_region
        if size is None:
            size = logits.shape[-2:]
        peak = F.max_pool2d(logits, size)  # per region, for a stable exponential
        scale = (logits.shape[-2] // peak.shape[-2], logits.shape[-1] // peak.shape[-1])
        weights = torch.exp(
            logits - peak.repeat_interleave(scale[0], -2).repeat_interleave(scale[1], -1)
        )
        mass = F.avg_pool2d(weights, size)  # >= 1 / (tiles per region): the peak tile has weight 1
        pooled = F.avg_pool2d(weights * values, size) / mass
        n_tiles = scale[0] * scale[1]
        return pooled, peak + torch.log(mass * n_tiles)
