"""Evaluation PNGs: magnitude differences of matched pairs and cut-out grids of disagreements."""

from pathlib import Path

import numpy as np

from bliss.predict.plots import save_png

__all__ = ["plot_cutout_grid", "plot_delta_mag"]

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def plot_delta_mag(
    pairs: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    mag_bins: list[float] | None = None,
    xlabel: str = "reference r magnitude",
    title: str = "",
) -> Path:
    """Save a scatter of magnitude differences against magnitude, one colour per catalog.

    Args:
        pairs: catalog name -> ``(mag, delta_mag)`` of its matched pairs (AB magnitudes; the
            difference is catalog minus reference). Shapes ``p`` each.
        path: the PNG to write (atomically).
        mag_bins: bin edges; the median difference per bin is drawn as a line [default: None].
        xlabel: x-axis label.
        title: plot title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    limit = 1.5
    for (name, (mag, delta)), color in zip(pairs.items(), _COLOURS, strict=False):
        ok = np.isfinite(mag) & np.isfinite(delta)
        mag, delta = mag[ok], delta[ok]
        axes.scatter(mag, np.clip(delta, -limit, limit), s=6, alpha=0.5, color=color, label=name)
        if mag_bins is not None and len(mag):
            edges = np.asarray(mag_bins, dtype=float)
            index = np.digitize(mag, edges) - 1
            medians = [
                np.median(delta[index == j]) if (index == j).any() else np.nan
                for j in range(len(edges) - 1)
            ]
            axes.plot((edges[:-1] + edges[1:]) / 2, medians, marker="o", color=color, lw=1.5)
    axes.axhline(0.0, color="black", lw=0.6)
    axes.set_ylim(-limit * 1.05, limit * 1.05)
    if mag_bins is not None:
        axes.set_xlim(mag_bins[0] - 0.25, mag_bins[-1] + 0.25)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(f"Δmag (catalog − reference), clipped at ±{limit}")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="upper left", fontsize=8)
    return save_png(figure, path)


def plot_cutout_grid(
    image: np.ndarray,
    background: np.ndarray,
    panels: list[dict],
    markers: dict[str, tuple[np.ndarray, np.ndarray, str, str]],
    path: str | Path,
    half_px: int = 16,
    n_cols: int = 6,
    title: str = "",
) -> Path:
    """Save a grid of asinh-stretched cut-outs with catalog markers.

    Args:
        image: one band, electrons. Shape ``h w``.
        background: its sky, electrons per pixel. Shape ``h w``.
        panels: one dict per cut-out: ``row``, ``col`` (bliss pixels, origin at the image
            corner) of its centre and a ``label``.
        markers: name -> ``(rows, cols, marker, colour)`` of a catalog's sources (bliss pixels).
        path: the PNG to write (atomically).
        half_px: each cut-out spans ``2 * half_px + 1`` pixels.
        n_cols: panels per row.
        title: figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    signal = (image - background) / np.sqrt(np.clip(background, 1e-3, None))
    stretched = np.arcsinh(np.nan_to_num(signal) / 3.0)
    n_rows = max(1, -(-len(panels) // n_cols))
    figure = Figure(figsize=(2.1 * n_cols, 2.3 * n_rows))
    FigureCanvasAgg(figure)
    h, w = image.shape
    for k, panel in enumerate(panels):
        axes = figure.add_subplot(n_rows, n_cols, k + 1)
        centre_r, centre_c = int(panel["row"]), int(panel["col"])
        top, left = centre_r - half_px, centre_c - half_px
        box = np.full((2 * half_px + 1, 2 * half_px + 1), np.nan)
        r0, r1 = max(top, 0), min(top + 2 * half_px + 1, h)
        c0, c1 = max(left, 0), min(left + 2 * half_px + 1, w)
        box[r0 - top : r1 - top, c0 - left : c1 - left] = stretched[r0:r1, c0:c1]
        missing = ~np.isfinite(image[r0:r1, c0:c1])
        shown = np.ma.masked_invalid(box)
        axes.imshow(shown, origin="upper", cmap="gray_r", vmin=-1, vmax=max(3.0, np.nanmax(box)))
        if missing.any():
            overlay = np.zeros(box.shape, dtype=bool)
            overlay[r0 - top : r1 - top, c0 - left : c1 - left] = missing
            axes.imshow(np.ma.masked_where(~overlay, overlay), cmap="autumn", alpha=0.4)
        for rows, cols, marker, color in markers.values():
            near = (np.abs(rows - 0.5 - top - half_px) <= half_px) & (
                np.abs(cols - 0.5 - left - half_px) <= half_px
            )
            axes.scatter(
                cols[near] - 0.5 - left,
                rows[near] - 0.5 - top,
                marker=marker,
                s=70,
                facecolors="none",
                edgecolors=color,
                linewidths=1.0,
            )
        axes.set_xlim(-0.5, 2 * half_px + 0.5)
        axes.set_ylim(2 * half_px + 0.5, -0.5)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_title(panel["label"], fontsize=6.5)
    legend = ", ".join(
        f"{name}: {marker} {color}" for name, (_, _, marker, color) in markers.items()
    )
    figure.suptitle(f"{title}\n{legend}; masked pixels shaded", fontsize=8)
    return save_png(figure, path)
