"""Figures of metric results, drawn off-screen (Agg) and written atomically."""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bliss.atomic import atomic_path
from bliss.errors import BlissValueError

__all__ = ["plot_calibration"]


def plot_calibration(
    levels: Sequence[float],
    observed: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
) -> Path:
    """Write a PNG calibration curve: nominal versus observed interval coverage.

    The figure is drawn with the Agg canvas directly, so it neither needs a display nor changes
    the global pyplot backend. It is written to a temporary file in the same directory and then
    renamed over ``path``, so readers never see a half-written PNG.

    Args:
        levels: nominal central-interval levels (x axis), e.g. ``[0.1, ..., 0.9]``.
        observed: observed coverage per level for each named quantity (y axis), e.g.
            ``{"flux r": [...], "disk_q": [...]}``, as returned by
            :func:`~bliss.metrics.flux.calibration_curve`.
        path: where to write the PNG; its directory must exist.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        BlissValueError: ``observed`` is empty or a curve has a different length than ``levels``.
    """
    if not observed:
        raise BlissValueError(
            "observed is empty; expected at least one curve {name: coverage per level}."
        )
    for name, values in observed.items():
        if len(values) != len(levels):
            raise BlissValueError(
                f"observed[{name!r}] has {len(values)} values but levels has {len(levels)}; "
                "expected one observed coverage per nominal level."
            )
    # imported here so that `import bliss.metrics` stays cheap in data-loader workers
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    figure = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for name, values in observed.items():
        axes.plot(list(levels), list(values), marker="o", label=name)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_aspect("equal")
    axes.set_xlabel("nominal coverage")
    axes.set_ylabel("observed coverage")
    axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return path
