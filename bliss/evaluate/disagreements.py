"""Where a catalog and a reference catalog disagree, and a likely reason for each disagreement.

Every unmatched source of a :class:`~bliss.metrics.reference.ReferenceComparison` is listed with the tags
that apply to it (several may), and its ``reason``: the first tag in :data:`TAGS` order. The tags
are heuristics computed from positions, magnitudes, the image's missing pixels and reference
flags; they say where to look, not what the source is. Kinds: ``reference_only_<catalog>`` (a
reference source the catalog missed) and ``<catalog>_only`` (a source the reference lacks).
"""

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from astropy.table import Table
from scipy import ndimage

from bliss.catalog import FullCatalog
from bliss.catalog.convert import nmgy_to_mag
from bliss.catalog.flags import BRIGHT_MAG, EDGE_PX, bright_radius_px
from bliss.catalog.io import PIXEL_CENTRE, column_values, plocs_to_xy, xy_to_plocs
from bliss.evaluate.plots import plot_cutout_grid
from bliss.protocols import SurveyImage

__all__ = ["TAGS", "list_disagreements", "plot_disagreements"]

#: tag -> meaning, in priority order (a source's ``reason`` is its first tag)
TAGS = {
    "masked": "missing data (NaN: fpM SATUR / INTERP / CR, or outside a band's footprint) at the "
    "centre pixel in any band, or within 2 px of it in the magnitude band",
    "edge": "centre within 8 px of the image border",
    "near_bright": "within min(150, 30 x 10**(0.2 (16 - m))) px of another reference source of "
    "magnitude m < 16 (don't-care ones included)",
    "blend": "another source of the same catalog within 4 px",
    "offset": "a source of the other catalog within 4 px that is not its match",
    "maybe_cr": "the reference object is flagged as a possible cosmic ray",
    "child": "the reference object is a deblended child",
    "faint": "fainter than faint_mag in its own catalog, or no positive flux",
    "none": "none of the above",
}
_MASK_RADIUS_PX = 2
_EDGE_PX = EDGE_PX  # the catalog's `edge` flag and this tag mean the same
_NEIGHBOUR_PX = 4.0
_BRIGHT_MAG = BRIGHT_MAG


def list_disagreements(
    comparisons: Mapping[str, Any],
    reference: Table,
    image: SurveyImage,
    band: int,
    *,
    faint_mag: float = 22.5,
) -> Table:
    """The unmatched sources of every comparison, tagged.

    Args:
        comparisons: catalog name -> :class:`~bliss.metrics.reference.ReferenceComparison`.
        reference: the reference table the comparisons used (with ``ignore``; optional bool
            columns ``child`` and ``maybe_cr``).
        image: the compared image (its NaN pixels are missing data).
        band: index of the magnitude band.
        faint_mag: AB magnitude beyond which a source is ``faint``.

    Returns:
        One row per unmatched source: ``kind``, ``x``, ``y`` (0-indexed pixels), ``mag``,
        ``galaxy`` (bool), ``nearest_other_px`` (distance to the nearest source of the other
        catalog), ``tags`` (``;``-joined) and ``reason``. ``meta``: ``AREA_MASKED`` and
        ``AREA_EDGE``, the fractions of the image where a source would be tagged ``masked`` or
        ``edge`` by position alone (a tag is telling only when its rate exceeds these).
    """
    _, height, width = image.images.shape
    near_missing = ~np.isfinite(image.images).all(axis=0) | ndimage.binary_dilation(
        ~np.isfinite(image.images[band]),
        structure=np.ones((2 * _MASK_RADIUS_PX + 1,) * 2, dtype=bool),
    )
    rows_px, cols_px = np.mgrid[0:height, 0:width] + PIXEL_CENTRE
    edge = np.minimum.reduce([rows_px, cols_px, height - rows_px, width - cols_px]) < _EDGE_PX
    all_ref_mag = nmgy_to_mag(
        torch.from_numpy(column_values(reference, f"flux_{image.bands[band]}"))
    ).numpy()
    all_ref_pos = xy_to_plocs(column_values(reference, "x"), column_values(reference, "y"))
    bright = np.flatnonzero(np.isfinite(all_ref_mag) & (all_ref_mag < _BRIGHT_MAG))
    rows: list[dict[str, Any]] = []
    for name, comparison in comparisons.items():
        kept = reference[comparison.reference_kept]
        extra = {
            key: np.asarray(kept[key], dtype=bool)
            if key in kept.colnames
            else np.zeros(len(kept), bool)
            for key in ("child", "maybe_cr")
        }
        ref_index = np.flatnonzero(comparison.reference_kept)
        ref_pos, ref_mag, ref_gal = _sources(comparison.reference, band)
        est_pos, est_mag, est_gal = _sources(comparison.estimate, band)
        ref_idx, est_idx = (idx.numpy() for idx in comparison.matches[0])
        partner_of_ref = np.full(len(ref_pos), -1)
        partner_of_ref[ref_idx] = est_idx
        partner_of_est = np.full(len(est_pos), -1)
        partner_of_est[est_idx] = ref_idx
        for kind, own, own_mag, own_gal, other, partner, is_ref in (
            (f"reference_only_{name}", ref_pos, ref_mag, ref_gal, est_pos, partner_of_ref, True),
            (f"{name}_only", est_pos, est_mag, est_gal, ref_pos, partner_of_est, False),
        ):
            for i in np.flatnonzero(partner < 0):
                position = own[i]
                tags = []
                r, c = int(position[0]), int(position[1])
                if not (0 <= r < height and 0 <= c < width) or near_missing[r, c]:
                    tags.append("masked")
                if (
                    min(position[0], position[1], height - position[0], width - position[1])
                    < _EDGE_PX
                ):
                    tags.append("edge")
                self_index = ref_index[i] if is_ref else -1
                if _near_bright(position, all_ref_pos, all_ref_mag, bright, self_index):
                    tags.append("near_bright")
                if _count_within(own, position, _NEIGHBOUR_PX) > 1:
                    tags.append("blend")
                other_dist = np.linalg.norm(other - position, axis=1) if len(other) else np.zeros(0)
                if (other_dist <= _NEIGHBOUR_PX).any():
                    tags.append("offset")
                if is_ref and extra["maybe_cr"][i]:
                    tags.append("maybe_cr")
                if is_ref and extra["child"][i]:
                    tags.append("child")
                if not np.isfinite(own_mag[i]) or own_mag[i] > faint_mag:
                    tags.append("faint")
                tags = tags or ["none"]
                x, y = plocs_to_xy(position)
                rows.append(
                    {
                        "kind": kind,
                        "x": float(x),
                        "y": float(y),
                        "mag": float(own_mag[i]),
                        "galaxy": bool(own_gal[i]),
                        "nearest_other_px": float(other_dist.min()) if len(other_dist) else np.inf,
                        "tags": ";".join(tags),
                        "reason": tags[0],
                    }
                )
    names = ("kind", "x", "y", "mag", "galaxy", "nearest_other_px", "tags", "reason")
    if rows:
        table = Table(rows=[[row[key] for key in names] for row in rows], names=names)
    else:
        table = Table(names=names, dtype=(str, float, float, float, bool, float, str, str))
    # the chance rate of the position-only tags: compare a kind's tag fraction with these
    table.meta["AREA_MASKED"] = float(near_missing.mean())
    table.meta["AREA_EDGE"] = float(edge.mean())
    return table


def plot_disagreements(
    disagreements: Table,
    comparisons: Mapping[str, Any],
    image: SurveyImage,
    band: int,
    path: Any,
    n_examples: int = 8,
    seed: int = 0,
    mag_range: tuple[float, float] = (-np.inf, np.inf),
) -> Any:
    """Save cut-outs of ``n_examples`` reference-only and ``n_examples`` bliss-only sources.

    Examples (with magnitudes in ``mag_range``) are drawn at random (``seed``), round-robin over
    the reasons, so that every reason shows up; each panel says the kind, magnitude, type and
    tags.
    """
    rng = np.random.default_rng(seed)
    panels = []
    in_range = (disagreements["mag"] >= mag_range[0]) & (disagreements["mag"] < mag_range[1])
    for kind in ("reference_only_bliss", "bliss_only"):
        rows = disagreements[(disagreements["kind"] == kind) & in_range]
        by_reason = {
            reason: list(rng.permutation(np.flatnonzero(rows["reason"] == reason)))
            for reason in TAGS
            if (rows["reason"] == reason).any()
        }
        chosen: list[int] = []
        while len(chosen) < n_examples and any(by_reason.values()):
            for members in by_reason.values():
                if members and len(chosen) < n_examples:
                    chosen.append(int(members.pop()))
        for index in chosen:
            row = rows[index]
            row_px, col_px = xy_to_plocs(row["x"], row["y"])
            panels.append(
                {
                    "row": row_px,
                    "col": col_px,
                    "label": f"{kind.replace('reference', 'ref')}\nr={row['mag']:.1f} "
                    f"{'gal' if row['galaxy'] else 'star'} {row['tags']}",
                }
            )
    reference, bliss = comparisons["bliss"].reference, comparisons["bliss"].estimate
    markers = {
        "reference": (*_plocs(reference), "s", "tab:orange"),
        "bliss": (*_plocs(bliss), "o", "tab:blue"),
    }
    return plot_cutout_grid(
        image.images[band],
        image.background[band],
        panels,
        markers,
        path,
        title=f"{image.path}: disagreements (band {image.bands[band]})",
    )


def _sources(catalog: FullCatalog, band: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``n 2``, magnitudes ``n`` and galaxy flags ``n`` of a one-image catalog."""
    n = int(catalog["n_sources"][0])
    position = catalog["plocs"][0, :n].double().numpy()
    mag = nmgy_to_mag(catalog["fluxes"][0, :n, band].double()).numpy()
    galaxy = catalog["source_type"][0, :n, 0].numpy() > 0.5
    return position, mag, galaxy


def _plocs(catalog: FullCatalog) -> tuple[np.ndarray, np.ndarray]:
    n = int(catalog["n_sources"][0])
    plocs = catalog["plocs"][0, :n].double().numpy()
    return plocs[:, 0], plocs[:, 1]


def _count_within(positions: np.ndarray, position: np.ndarray, radius: float) -> int:
    if not len(positions):
        return 0
    return int((np.linalg.norm(positions - position, axis=1) <= radius).sum())


def _near_bright(
    position: np.ndarray, ref_pos: np.ndarray, ref_mag: np.ndarray, bright: np.ndarray, own: int
) -> bool:
    others = bright[bright != own]
    if not len(others):
        return False
    radius = bright_radius_px(ref_mag[others])
    return bool((np.linalg.norm(ref_pos[others] - position, axis=1) <= radius).any())
