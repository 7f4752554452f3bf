"""Where an image is too crowded for a sparse-field model, measured from its pixels alone.

The image is cut into square blocks. A block is *crowded* when both

* its peaks are dense: local maxima of the 3 x 3-summed signal-to-noise above 5, one per
  5 x 5 px at most, number at least ``min_peak_density`` per px² (0.01 by default: a source per
  10 x 10 px; a 4 px tile then holds a second source nearby more often than not), and
* its typical pixel holds source light: the block's median pixel is at least
  ``min_median_snr`` sky standard deviations above the sky (1 by default), which a bright star
  or a large galaxy alone does not give to a whole block.

On SDSS 94-1-12 (a typical high-latitude field) no 64 px block is crowded (at most 31 peaks and a
median of 4.6 sigma, never both); on the M2 frame 2583-2-136 the cluster's blocks hold 40-70
peaks and medians of 2-1700 sigma.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bliss.errors import BlissConfigError

__all__ = ["CrowdingSettings", "crowded_blocks", "crowded_boxes"]

_PEAK_SNR = 5.0


@dataclass(frozen=True)
class CrowdingSettings:
    """When a block of an image counts as crowded (see the module's docstring).

    Attributes:
        block_px: block side, pixels.
        min_peak_density: peaks per px² from which a block may be crowded.
        min_median_snr: median pixel signal-to-noise from which a block may be crowded.
    """

    block_px: int = 64
    min_peak_density: float = 0.01
    min_median_snr: float = 1.0

    def __post_init__(self) -> None:
        for key in ("block_px", "min_peak_density", "min_median_snr"):
            if not getattr(self, key) > 0:
                raise BlissConfigError(
                    f"predict.crowded.{key}={getattr(self, key)}; expected a value > 0."
                )


def crowded_blocks(
    image: np.ndarray, background: np.ndarray, settings: CrowdingSettings
) -> np.ndarray:
    """Which blocks of one band are crowded.

    Args:
        image: electrons, sky included, NaN where missing. Shape ``h w``.
        background: sky, electrons per pixel. Shape ``h w``.
        settings: the block size and thresholds.

    Returns:
        Shape ``ceil(h / block_px) ceil(w / block_px)`` (bool); partial blocks at the bottom and
        right edges are judged on their pixels.

    Example:
        >>> sky = np.full((128, 128), 100.0)
        >>> crowded_blocks(sky + 0.0, sky, CrowdingSettings()).tolist()
        [[False, False], [False, False]]
    """
    snr = np.nan_to_num((image - background) / np.sqrt(np.clip(background, 1e-3, None)))
    summed = ndimage.uniform_filter(snr, 3) * 3.0  # S/N of a 3 x 3 sum of white noise
    peaks = (summed == ndimage.maximum_filter(summed, 5)) & (summed > _PEAK_SNR)
    block = settings.block_px
    height, width = snr.shape
    n_rows, n_cols = -(-height // block), -(-width // block)
    crowded = np.zeros((n_rows, n_cols), dtype=bool)
    finite = np.isfinite(image)
    for i in range(n_rows):
        for j in range(n_cols):
            rows, cols = slice(i * block, (i + 1) * block), slice(j * block, (j + 1) * block)
            valid = finite[rows, cols]
            if valid.sum() < 0.25 * block * block:  # mostly missing: no verdict
                continue
            density = peaks[rows, cols].sum() / valid.sum()
            median = np.median(snr[rows, cols][valid])
            crowded[i, j] = (
                density >= settings.min_peak_density and median >= settings.min_median_snr
            )
    return crowded


def crowded_boxes(
    blocks: np.ndarray, block_px: int, shape: tuple[int, int]
) -> list[tuple[slice, slice, np.ndarray]]:
    """Connected groups of crowded blocks as pixel boxes.

    Returns:
        One ``(rows, cols, member)`` per group (8-connected): the bounding box in pixels (clipped
        to ``shape``) and which of the box's blocks belong to the group (``bh bw`` bool).

    Example:
        >>> blocks = np.array([[True, False, False], [False, False, True]])
        >>> [(r.start, r.stop, c.start, c.stop) for r, c, _ in crowded_boxes(blocks, 10, (20, 25))]
        [(0, 10, 0, 10), (10, 20, 20, 25)]
    """
    labels, n_groups = ndimage.label(blocks, structure=np.ones((3, 3), dtype=int))
    boxes = []
    for group, (row_blocks, col_blocks) in enumerate(ndimage.find_objects(labels), start=1):
        rows = slice(row_blocks.start * block_px, min(row_blocks.stop * block_px, shape[0]))
        cols = slice(col_blocks.start * block_px, min(col_blocks.stop * block_px, shape[1]))
        boxes.append((rows, cols, labels[row_blocks, col_blocks] == group))
    return boxes
