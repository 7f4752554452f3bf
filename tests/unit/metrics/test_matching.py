import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from bliss.catalog import FullCatalog
from bliss.catalog.convert import mag_to_nmgy
from bliss.errors import BlissShapeError, BlissValueError
from bliss.metrics import match_catalogs, match_full_catalogs


def _catalog(plocs_per_image, mags_per_image=None, size=20):
    """A FullCatalog from per-image lists of (row, col), padded with a decoy at (1, 1)."""
    n_max = max(len(p) for p in plocs_per_image)
    n_sources = torch.tensor([len(p) for p in plocs_per_image])
    plocs = torch.ones(len(plocs_per_image), n_max, 2)  # padding sits on real positions on purpose
    fluxes = torch.ones(len(plocs_per_image), n_max, 1)
    for i, p in enumerate(plocs_per_image):
        if p:
            plocs[i, : len(p)] = torch.tensor(p, dtype=torch.float32)
        if mags_per_image is not None and p:
            fluxes[i, : len(p), 0] = mag_to_nmgy(torch.tensor(mags_per_image[i]))
    return FullCatalog(size, size, {"n_sources": n_sources, "plocs": plocs, "fluxes": fluxes})


def _pairs(result):
    true_idx, est_idx = result
    return list(zip(true_idx.tolist(), est_idx.tolist(), strict=True))


def test_known_answer_one_estimate_too_far():
    true_plocs = torch.tensor([[2.0, 2.0], [8.0, 8.0], [15.0, 3.0]])
    est_plocs = torch.tensor([[8.3, 7.9], [2.0, 2.5], [15.0, 5.0]])  # last one is 2 px away
    assert _pairs(match_catalogs(true_plocs, est_plocs, max_dist_px=1.0)) == [(0, 1), (1, 0)]


def test_distance_limit_is_inclusive():
    true_plocs = torch.tensor([[0.0, 0.0]])
    assert _pairs(match_catalogs(true_plocs, torch.tensor([[1.0, 0.0]]), 1.0)) == [(0, 0)]
    assert _pairs(match_catalogs(true_plocs, torch.tensor([[1.001, 0.0]]), 1.0)) == []


def _greedy(true_plocs, est_plocs, max_dist_px):
    """Closest-pair-first greedy matching, the baseline the Hungarian matcher must beat."""
    dist = torch.cdist(true_plocs, est_plocs)
    pairs, used_true, used_est = [], set(), set()
    for flat in torch.argsort(dist.flatten()).tolist():
        i, j = divmod(flat, dist.shape[1])
        if i not in used_true and j not in used_est and dist[i, j] <= max_dist_px:
            pairs.append((i, j))
            used_true.add(i)
            used_est.add(j)
    return sorted(pairs)


def test_hungarian_beats_greedy():
    # Two true sources 1 px apart. The closest pair overall (true 0, est 0) blocks greedy from
    # matching true 1, whose only other estimate is out of reach; swapping gives two matches.
    true_plocs = torch.tensor([[5.0, 5.0], [5.0, 6.0]])
    est_plocs = torch.tensor([[5.0, 5.45], [5.0, 4.1]])
    assert _greedy(true_plocs, est_plocs, 1.0) == [(0, 0)]
    assert _pairs(match_catalogs(true_plocs, est_plocs, 1.0)) == [(0, 1), (1, 0)]


def test_forbidden_pairs_never_cost_a_match():
    # An unconstrained assignment minimises the total with two forbidden pairs (2.6 < 4.6) and
    # would keep no match after thresholding; the matcher must keep the allowed pair.
    true_plocs = torch.tensor([[0.0, 0.0], [0.0, 2.5]])
    est_plocs = torch.tensor([[0.0, 1.0], [0.0, -1.1]])
    rows, cols = linear_sum_assignment(torch.cdist(true_plocs, est_plocs).numpy())
    naive = [
        (r, c)
        for r, c in zip(rows, cols, strict=True)
        if torch.dist(true_plocs[r], est_plocs[c]) <= 1.0
    ]
    assert naive == []
    assert _pairs(match_catalogs(true_plocs, est_plocs, 1.0)) == [(0, 0)]


def _brute_force(true_plocs, est_plocs, max_dist_px):
    """(most matches, smallest total distance) over every partial one-to-one matching."""
    dist = torch.cdist(true_plocs.double(), est_plocs.double()).numpy()
    n, k = dist.shape
    best = (0, 0.0)
    for choice in itertools.product(range(-1, k), repeat=n):
        used = [j for j in choice if j >= 0]
        if len(used) != len(set(used)):
            continue
        if any(j >= 0 and dist[i, j] > max_dist_px for i, j in enumerate(choice)):
            continue
        score = (len(used), -sum(dist[i, j] for i, j in enumerate(choice) if j >= 0))
        if score > (best[0], -best[1]):
            best = (score[0], -score[1])
    return best


@pytest.mark.parametrize("seed", range(20))
def test_matches_brute_force_optimum(seed):
    generator = torch.Generator().manual_seed(seed)
    n_true, n_est = torch.randint(0, 5, (2,), generator=generator).tolist()
    true_plocs = torch.rand(n_true, 2, generator=generator) * 3
    est_plocs = torch.rand(n_est, 2, generator=generator) * 3
    true_idx, est_idx = match_catalogs(true_plocs, est_plocs, 1.0)
    total = float(torch.linalg.norm(true_plocs[true_idx] - est_plocs[est_idx], dim=1).sum())
    n_best, total_best = _brute_force(true_plocs, est_plocs, 1.0)
    assert len(true_idx) == n_best
    assert total == pytest.approx(total_best, abs=1e-5)
    assert len(set(true_idx.tolist())) == len(true_idx) == len(set(est_idx.tolist()))


@pytest.mark.parametrize(("n_true", "n_est"), [(0, 0), (0, 3), (3, 0)])
def test_empty_inputs(n_true, n_est):
    true_idx, est_idx = match_catalogs(torch.rand(n_true, 2), torch.rand(n_est, 2))
    assert true_idx.shape == est_idx.shape == (0,)
    assert true_idx.dtype == est_idx.dtype == torch.long


def test_magnitude_slack_excludes_a_pair():
    true_plocs = torch.tensor([[5.0, 5.0]])
    est_plocs = torch.tensor([[5.0, 5.1], [5.0, 5.6]])
    true_mag = torch.tensor([20.0])
    est_mag = torch.tensor([23.0, 20.2])
    assert _pairs(match_catalogs(true_plocs, est_plocs, 1.0)) == [(0, 0)]
    slack = {"true_mag": true_mag, "est_mag": est_mag}
    assert _pairs(match_catalogs(true_plocs, est_plocs, 1.0, **slack, max_mag_diff=0.5)) == [(0, 1)]
    assert _pairs(match_catalogs(true_plocs, est_plocs, 1.0, **slack, max_mag_diff=0.1)) == []


def test_infinite_magnitudes_never_match():
    plocs = torch.tensor([[5.0, 5.0]])
    inf = torch.tensor([float("inf")])
    assert _pairs(match_catalogs(plocs, plocs, 1.0, inf, inf, max_mag_diff=10.0)) == []


def test_bad_arguments_raise():
    plocs = torch.zeros(2, 2)
    with pytest.raises(BlissShapeError, match="true_plocs"):
        match_catalogs(torch.zeros(2), plocs)
    with pytest.raises(BlissValueError, match="max_dist_px"):
        match_catalogs(plocs, plocs, max_dist_px=-1.0)
    with pytest.raises(BlissValueError, match="max_mag_diff"):
        match_catalogs(plocs, plocs, true_mag=torch.zeros(2), est_mag=torch.zeros(2))
    with pytest.raises(BlissShapeError, match="est_mag"):
        match_catalogs(plocs, plocs, 1.0, torch.zeros(2), torch.zeros(3), max_mag_diff=1.0)


def test_full_catalogs_match_per_image_and_ignore_padding():
    truth = _catalog([[(1.0, 1.0), (10.0, 10.0)], [(4.0, 4.0)]], [[20.0, 21.0], [19.0]])
    # image 1 of est is padded with a decoy at (1, 1) that would match truth 0 of image 0
    est = _catalog([[(10.2, 10.0), (1.0, 1.3), (15.0, 15.0)], []], [[23.0, 20.1, 20.0], []])
    matches = match_full_catalogs(truth, est, max_dist_px=1.0)
    assert [_pairs(m) for m in matches] == [[(0, 1), (1, 0)], []]
    with_slack = match_full_catalogs(truth, est, max_dist_px=1.0, max_mag_diff=0.5)
    assert [_pairs(m) for m in with_slack] == [[(0, 1)], []]


def test_full_catalogs_must_describe_the_same_images():
    truth = _catalog([[(1.0, 1.0)], [(2.0, 2.0)]])
    with pytest.raises(BlissValueError, match="images"):
        match_full_catalogs(truth, _catalog([[(1.0, 1.0)]]))
    with pytest.raises(BlissValueError, match="image size"):
        match_full_catalogs(truth, _catalog([[(1.0, 1.0)], []], size=30))


def test_large_catalog_is_matched_exactly():
    generator = torch.Generator().manual_seed(0)
    true_plocs = torch.rand(3000, 2, generator=generator) * 500
    est_plocs = true_plocs + 0.1 * torch.randn(3000, 2, generator=generator)
    permutation = torch.randperm(3000, generator=generator)
    true_idx, est_idx = match_catalogs(true_plocs, est_plocs[permutation], 1.0)
    assert len(true_idx) > 2990
    assert np.mean((permutation[est_idx] == true_idx).numpy()) > 0.99
