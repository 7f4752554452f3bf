"""Match true and estimated sources of one image by optimal (Hungarian) assignment.

A true source and an estimated source are *allowed* to match when they are at most
``max_dist_px`` pixels apart and, when a magnitude slack is given, their magnitudes differ by at
most ``max_mag_diff``. Among all one-to-one matchings made of allowed pairs, the matcher returns
one with the most pairs and, among those, the smallest total distance.

This differs from "assign everything, then drop the far pairs": a global assignment over all
pairs can trade an allowed pair for a cheaper total that uses a forbidden one, and then lose a
match when the forbidden pair is dropped. Here forbidden pairs cost more than any set of allowed
pairs, so they are used only when nothing else is left.
"""

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import KDTree
from torch import Tensor

from bliss.catalog import FullCatalog
from bliss.catalog.convert import nmgy_to_mag
from bliss.catalog.shapes import check_shape
from bliss.errors import BlissShapeError, BlissValueError

__all__ = ["Matches", "match_catalogs", "match_full_catalogs"]

#: One ``(true_idx, est_idx)`` pair of index tensors per image (see :func:`match_catalogs`).
Matches = Sequence[tuple[Tensor, Tensor]]


def match_catalogs(
    true_plocs: Tensor,
    est_plocs: Tensor,
    max_dist_px: float = 1.0,
    true_mag: Tensor | None = None,
    est_mag: Tensor | None = None,
    max_mag_diff: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Match the sources of one image.

    Args:
        true_plocs: true positions in pixels, ``(row, col)``.
        est_plocs: estimated positions in pixels, ``(row, col)``.
        max_dist_px: largest distance of a match, in pixels (inclusive) [default: 1].
        true_mag: AB magnitudes of the true sources; needed with ``max_mag_diff``.
        est_mag: AB magnitudes of the estimated sources; needed with ``max_mag_diff``.
        max_mag_diff: largest ``|true_mag - est_mag|`` of a match (inclusive); ``None`` matches on
            position only [default: None]. Non-finite magnitudes never match.

    Returns:
        ``(true_idx, est_idx)``: indices into ``true_plocs`` and ``est_plocs`` of the matched
        pairs, sorted by ``true_idx``; both empty when nothing matches.

    Raises:
        BlissShapeError: an input does not have the shape below.
        BlissValueError: ``max_dist_px`` is negative or NaN, ``max_mag_diff`` is negative, or
            the magnitudes and ``max_mag_diff`` are not given together.

    Shapes:
        ``true_plocs``: ``n 2``; ``est_plocs``: ``k 2``; ``true_mag``: ``n``; ``est_mag``: ``k``;
        outputs: ``p`` each (int64, on the device of ``true_plocs``), ``p <= min(n, k)``.

    Example:
        >>> import torch
        >>> true_idx, est_idx = match_catalogs(torch.tensor([[0.0, 0.0], [5.0, 5.0]]),
        ...                                    torch.tensor([[5.2, 5.0], [9.0, 9.0]]))
        >>> true_idx.tolist(), est_idx.tolist()
        ([1], [0])
    """
    sizes = check_shape("true_plocs", true_plocs, "n 2")
    sizes = check_shape("est_plocs", est_plocs, "k 2", sizes)
    if not max_dist_px >= 0:
        raise BlissValueError(
            f"max_dist_px={max_dist_px}; expected a distance >= 0 in pixels. Pass e.g. 1.0."
        )
    use_mag = max_mag_diff is not None
    if use_mag != (true_mag is not None) or use_mag != (est_mag is not None):
        raise BlissValueError(
            f"match_catalogs got true_mag={'set' if true_mag is not None else None}, "
            f"est_mag={'set' if est_mag is not None else None}, max_mag_diff={max_mag_diff}; "
            "expected all three or none. Pass both magnitudes with max_mag_diff, or none of them."
        )
    if use_mag:
        if not max_mag_diff >= 0:
            raise BlissValueError(
                f"max_mag_diff={max_mag_diff}; expected a magnitude difference >= 0, e.g. 0.5."
            )
        check_shape("true_mag", true_mag, "n", sizes)
        check_shape("est_mag", est_mag, "k", sizes)

    device = true_plocs.device
    true_np = true_plocs.detach().cpu().double().numpy()
    est_np = est_plocs.detach().cpu().double().numpy()
    rows, cols, dists = _candidate_pairs(true_np, est_np, float(max_dist_px))
    if use_mag and rows.size:
        true_mag_np = true_mag.detach().cpu().double().numpy()
        est_mag_np = est_mag.detach().cpu().double().numpy()
        with np.errstate(invalid="ignore"):  # inf - inf gives NaN, which compares False below
            mag_diff = np.abs(true_mag_np[rows] - est_mag_np[cols])
        keep = mag_diff <= max_mag_diff
        rows, cols, dists = rows[keep], cols[keep], dists[keep]

    true_idx, est_idx = _assign(rows, cols, dists, sizes["n"], sizes["k"])
    order = np.argsort(true_idx, kind="stable")
    return (
        torch.as_tensor(true_idx[order], dtype=torch.long, device=device),
        torch.as_tensor(est_idx[order], dtype=torch.long, device=device),
    )


def match_full_catalogs(
    truth: FullCatalog,
    est: FullCatalog,
    max_dist_px: float = 1.0,
    max_mag_diff: float | None = None,
    ref_band: int = 0,
) -> list[tuple[Tensor, Tensor]]:
    """Match every image of two full catalogs with :func:`match_catalogs`.

    Args:
        truth: the true catalog.
        est: the estimated catalog of the same images.
        max_dist_px: largest distance of a match, in pixels [default: 1].
        max_mag_diff: largest magnitude difference of a match in band ``ref_band``; ``None``
            matches on position only [default: None]. Needs ``fluxes`` (nanomaggies) in both.
        ref_band: band whose magnitudes are compared [default: 0].

    Returns:
        One ``(true_idx, est_idx)`` pair per image; indices point into the first
        ``n_sources[i]`` entries of image ``i``.

    Raises:
        BlissValueError: the catalogs cover a different number of images or different image
            sizes, or ``fluxes`` is missing when ``max_mag_diff`` is given.
    """
    _check_same_images(truth, est)
    if max_mag_diff is not None:
        for name, cat in (("truth", truth), ("est", est)):
            _check_band(name, cat, ref_band)
    matches = []
    for i in range(truth.batch_size):
        n_true, n_est = int(truth["n_sources"][i]), int(est["n_sources"][i])
        mags: dict[str, Tensor | float | None] = {}
        if max_mag_diff is not None:
            mags = {
                "true_mag": nmgy_to_mag(truth["fluxes"][i, :n_true, ref_band]),
                "est_mag": nmgy_to_mag(est["fluxes"][i, :n_est, ref_band]),
                "max_mag_diff": max_mag_diff,
            }
        matches.append(
            match_catalogs(truth["plocs"][i, :n_true], est["plocs"][i, :n_est], max_dist_px, **mags)
        )
    return matches


def _candidate_pairs(
    true_np: np.ndarray, est_np: np.ndarray, max_dist_px: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs within ``max_dist_px`` as ``(true_idx, est_idx, distance)`` arrays."""
    empty = np.zeros(0, dtype=np.int64)
    true_ok = np.flatnonzero(np.isfinite(true_np).all(axis=1))
    est_ok = np.flatnonzero(np.isfinite(est_np).all(axis=1))
    if true_ok.size == 0 or est_ok.size == 0:
        return empty, empty, np.zeros(0)
    # a k-d tree keeps memory linear in the number of sources for crowded fields
    pairs = KDTree(true_np[true_ok]).sparse_distance_matrix(
        KDTree(est_np[est_ok]), max_dist_px, output_type="ndarray"
    )
    rows = true_ok[pairs["i"].astype(np.int64)]
    cols = est_ok[pairs["j"].astype(np.int64)]
    # recompute distances so that pairs at distance exactly 0 are kept with an exact value
    dists = np.linalg.norm(true_np[rows] - est_np[cols], axis=1)
    keep = dists <= max_dist_px
    return rows[keep], cols[keep], dists[keep]


def _assign(
    rows: np.ndarray, cols: np.ndarray, dists: np.ndarray, n_true: int, n_est: int
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-cardinality, minimum-distance matching restricted to the allowed pairs."""
    empty = np.zeros(0, dtype=np.int64)
    if rows.size == 0:
        return empty, empty
    # Allowed pairs split the sources into independent groups (connected components of the
    # bipartite graph); solving each group alone gives the same matching at a fraction of the cost.
    n_nodes = n_true + n_est
    graph = coo_matrix((np.ones(rows.size), (rows, cols + n_true)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    edge_label = labels[rows]
    matched_true, matched_est = [], []
    for label in np.unique(edge_label):
        in_group = edge_label == label
        g_rows, g_cols, g_dists = rows[in_group], cols[in_group], dists[in_group]
        true_ids, local_r = np.unique(g_rows, return_inverse=True)
        est_ids, local_c = np.unique(g_cols, return_inverse=True)
        # A forbidden pair costs more than any full set of allowed pairs, so the assignment first
        # maximises the number of allowed pairs, then minimises their total distance.
        forbidden = (min(true_ids.size, est_ids.size) + 1) * (float(g_dists.max()) + 1.0)
        cost = np.full((true_ids.size, est_ids.size), forbidden)
        cost[local_r, local_c] = g_dists
        allowed = np.zeros(cost.shape, dtype=bool)
        allowed[local_r, local_c] = True
        r, c = linear_sum_assignment(cost)
        keep = allowed[r, c]
        matched_true.append(true_ids[r[keep]])
        matched_est.append(est_ids[c[keep]])
    return np.concatenate(matched_true), np.concatenate(matched_est)


def _check_same_images(truth: FullCatalog, est: FullCatalog) -> None:
    """Raise unless both catalogs describe the same number and size of images."""
    if truth.batch_size != est.batch_size:
        raise BlissValueError(
            f"truth has {truth.batch_size} images but est has {est.batch_size}; expected "
            "catalogs of the same images. Pass matching batches."
        )
    if (truth.height_px, truth.width_px) != (est.height_px, est.width_px):
        raise BlissValueError(
            f"truth covers {truth.height_px}x{truth.width_px} px but est covers "
            f"{est.height_px}x{est.width_px} px; expected the same image size. Crop both "
            "catalogs to the same region (FullCatalog.crop)."
        )


def _check_band(name: str, cat: FullCatalog, band: int) -> None:
    """Raise unless ``cat`` has ``fluxes`` with a band ``band``."""
    if "fluxes" not in cat:
        raise BlissValueError(
            f"{name} has keys {cat.keys()}; `fluxes` (nanomaggies) is needed for magnitudes. "
            "Add fluxes to the catalog or do not ask for magnitude-based metrics."
        )
    n_bands = cat["fluxes"].shape[-1]
    if not 0 <= band < n_bands:
        raise BlissValueError(
            f"band={band} but {name}['fluxes'] has {n_bands} bands; pass a band in [0, {n_bands})."
        )


def _check_matches(truth: FullCatalog, est: FullCatalog, matches: Matches) -> None:
    """Raise unless ``matches`` has one valid index pair per image."""
    _check_same_images(truth, est)
    if len(matches) != truth.batch_size:
        raise BlissValueError(
            f"got {len(matches)} match pairs for {truth.batch_size} images; expected one "
            "(true_idx, est_idx) pair per image, as returned by match_full_catalogs."
        )
    for i, (true_idx, est_idx) in enumerate(matches):
        if true_idx.ndim != 1 or true_idx.shape != est_idx.shape:
            raise BlissShapeError(
                f"matches[{i}] has shapes {tuple(true_idx.shape)} and {tuple(est_idx.shape)}; "
                "expected two 1-d tensors `p` of equal length. Use match_full_catalogs."
            )
        for label, idx, cat in (("true_idx", true_idx, truth), ("est_idx", est_idx, est)):
            n_sources = int(cat["n_sources"][i])
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_sources):
                raise BlissValueError(
                    f"matches[{i}] {label} spans [{int(idx.min())}, {int(idx.max())}] but image "
                    f"{i} has {n_sources} sources; the matches belong to other catalogs. "
                    "Recompute them with match_full_catalogs."
                )


def _matched_masks(truth: FullCatalog, est: FullCatalog, matches: Matches) -> tuple[Tensor, Tensor]:
    """Which true and which estimated sources are matched. Shapes: ``b n`` each (bool)."""
    _check_matches(truth, est, matches)
    true_matched = torch.zeros_like(truth.is_on_mask)
    est_matched = torch.zeros_like(est.is_on_mask)
    for i, (true_idx, est_idx) in enumerate(matches):
        true_matched[i, true_idx.to(true_matched.device)] = True
        est_matched[i, est_idx.to(est_matched.device)] = True
    return true_matched, est_matched


def _paired_values(
    truth: FullCatalog, est: FullCatalog, matches: Matches, key: str
) -> tuple[Tensor, Tensor]:
    """Values of ``key`` for the matched pairs of all images. Shapes: ``p d`` each."""
    true_parts, est_parts = [], []
    for i, (true_idx, est_idx) in enumerate(matches):
        true_parts.append(truth[key][i, true_idx.to(truth[key].device)])
        est_parts.append(est[key][i, est_idx.to(est[key].device)])
    if not true_parts:
        d = truth[key].shape[-1]
        return truth[key].new_zeros(0, d), est[key].new_zeros(0, d)
    return torch.cat(true_parts), torch.cat(est_parts)
