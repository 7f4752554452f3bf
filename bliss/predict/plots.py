"""PNGs of predictions: an image with its detections overlaid, written atomically."""

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bliss.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_detections", "save_png"]


def save_png(figure: "Figure", path: str | Path) -> Path:
    """Write ``figure`` to ``path`` as a PNG, atomically (never a half-written file)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return Path(path)


def plot_detections(
    image: np.ndarray,
    background: np.ndarray,
    path: str | Path,
    detections: dict[str, np.ndarray] | None = None,
    reference: dict[str, np.ndarray] | None = None,
    title: str = "",
) -> Path:
    """Save an asinh-stretched image with circles on detections (and squares on a reference).

    Args:
        image: one band, electrons. Shape ``h w``.
        background: its sky, electrons per pixel (``h w`` or a scalar).
        path: the PNG to write (atomically).
        detections: ``x``, ``y`` (0-indexed pixels) and optionally ``prob_galaxy``.
        reference: ``x``, ``y`` of another catalog (truth or a survey pipeline).
        title: plot title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    signal = (image - background) / np.sqrt(np.clip(background, 1e-3, None))
    stretched = np.arcsinh(np.nan_to_num(signal) / 3.0)
    h, w = image.shape
    size = 8 * min(1.0, max(h, w) / 1024) + 4
    figure = Figure(figsize=(size * w / max(h, w) + 1, size * h / max(h, w)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(
        stretched, origin="upper", cmap="gray_r", vmin=-1, vmax=np.percentile(stretched, 99.7)
    )
    if reference is not None and len(reference["x"]):
        axes.scatter(
            reference["x"],
            reference["y"],
            s=60,
            marker="s",
            facecolors="none",
            edgecolors="tab:orange",
            linewidths=0.8,
            label="reference",
        )
    if detections is not None and len(detections["x"]):
        galaxy = detections.get("prob_galaxy", np.zeros(len(detections["x"]))) > 0.5
        for mask, color, label in (
            (~galaxy, "tab:blue", "bliss star"),
            (galaxy, "tab:red", "bliss galaxy"),
        ):
            axes.scatter(
                detections["x"][mask],
                detections["y"][mask],
                s=30,
                facecolors="none",
                edgecolors=color,
                linewidths=0.8,
                label=label,
            )
    axes.set_xlim(-0.5, w - 0.5)
    axes.set_ylim(h - 0.5, -0.5)
    axes.set_title(title, fontsize=9)
    axes.legend(loc="upper right", fontsize=7)
    return save_png(figure, path)
