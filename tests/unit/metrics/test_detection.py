import json

import pytest
import torch

from bliss.catalog import FullCatalog
from bliss.catalog.convert import mag_to_nmgy
from bliss.errors import BlissShapeError, BlissValueError
from bliss.metrics import (
    classification_metrics,
    compare_counts,
    detection_metrics,
    match_full_catalogs,
)


def _catalog(sources_per_image, size=20):
    """A FullCatalog from per-image lists of (row, col, mag, source_type)."""
    n_max = max([len(s) for s in sources_per_image] + [1])
    batch = len(sources_per_image)
    data = {
        "n_sources": torch.tensor([len(s) for s in sources_per_image]),
        "plocs": torch.zeros(batch, n_max, 2),
        "fluxes": torch.zeros(batch, n_max, 1),
        "source_type": torch.zeros(batch, n_max, 1),
    }
    for i, sources in enumerate(sources_per_image):
        for j, (row, col, mag, source_type) in enumerate(sources):
            data["plocs"][i, j] = torch.tensor([row, col])
            data["fluxes"][i, j, 0] = mag_to_nmgy(mag)
            data["source_type"][i, j, 0] = source_type
    return FullCatalog(size, size, data)


def test_known_answer_three_true_three_est():
    truth = _catalog([[(2, 2, 20, 0), (8, 8, 20, 1), (15, 3, 20, 1)]])
    est = _catalog([[(8.3, 7.9, 20, 1), (2, 2.5, 20, 1), (15, 5, 20, 1)]])  # last is 2 px off
    matches = match_full_catalogs(truth, est, max_dist_px=1.0)
    result = detection_metrics(truth, est, matches)
    assert (result["n_true"], result["n_est"], result["n_matched"]) == (3, 3, 2)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    # one matched star was called a galaxy
    assert result["classification_accuracy"] == pytest.approx(0.5)


def test_per_bin_recall_by_true_mag_and_precision_by_est_mag():
    # true 1 (mag 21) is found with estimated mag 19.5, so it counts for recall in bin [20, 22)
    # but for precision in bin [18, 20); est 2 is spurious.
    truth = _catalog([[(2, 2, 19.0, 0), (8, 8, 21.0, 0), (14, 14, 21.0, 0)]])
    est = _catalog([[(2, 2.1, 19.1, 0), (8, 8.2, 19.5, 0), (17, 3, 21.5, 0)]])
    matches = match_full_catalogs(truth, est)
    result = detection_metrics(truth, est, matches, ref_band=0, mag_bins=[18, 20, 22])
    per_bin = result["per_bin"]
    assert result["mag_bins"] == [18.0, 20.0, 22.0]
    assert per_bin["n_true"] == [1, 2]
    assert per_bin["n_true_matched"] == [1, 1]
    assert per_bin["recall"] == pytest.approx([1.0, 0.5])
    assert per_bin["n_est"] == [2, 1]
    assert per_bin["n_est_matched"] == [2, 0]
    assert per_bin["precision"] == pytest.approx([1.0, 0.0])
    assert per_bin["f1"] == pytest.approx([1.0, 0.0])
    assert (result["precision"], result["recall"]) == pytest.approx((2 / 3, 2 / 3))


def test_sources_outside_the_bins_are_not_counted():
    truth = _catalog([[(2, 2, 17.0, 0), (8, 8, 19.0, 0), (12, 12, 25.0, 0)]])
    result = detection_metrics(truth, truth, match_full_catalogs(truth, truth), mag_bins=[18, 20])
    assert result["per_bin"]["n_true"] == [1]
    assert result["per_bin"]["n_est"] == [1]
    assert result["n_true"] == 3


def test_empty_catalogs_give_zeros():
    empty = _catalog([[], []])
    result = detection_metrics(empty, empty, match_full_catalogs(empty, empty), mag_bins=[18, 20])
    assert (result["n_true"], result["n_est"], result["n_matched"]) == (0, 0, 0)
    assert (result["precision"], result["recall"], result["f1"]) == (0.0, 0.0, 0.0)
    assert result["per_bin"]["recall"] == [0.0]
    assert result["classification_accuracy"] == 0.0


def test_no_estimates_gives_zero_recall():
    truth = _catalog([[(2, 2, 20, 0)], [(5, 5, 20, 1)]])
    est = _catalog([[], []])
    result = detection_metrics(truth, est, match_full_catalogs(truth, est))
    assert (result["n_true"], result["n_est"], result["recall"], result["precision"]) == (
        2,
        0,
        0.0,
        0.0,
    )


def test_results_are_plain_json():
    truth = _catalog([[(2, 2, 19, 0), (8, 8, 21, 1)]])
    est = _catalog([[(2, 2.1, 19.1, 1)]])
    result = detection_metrics(truth, est, match_full_catalogs(truth, est), mag_bins=[18, 20, 22])
    assert json.loads(json.dumps(result)) == result
    assert all(isinstance(v, int | float | list | dict) for v in result.values())


def test_classification_confusion_counts():
    truth = _catalog([[(2, 2, 20, 1), (8, 8, 20, 1), (14, 14, 20, 0), (18, 2, 20, 0)]])
    est = _catalog([[(2, 2, 20, 1), (8, 8, 20, 0), (14, 14, 20, 0), (18, 2, 20, 0)]])
    result = classification_metrics(truth, est, match_full_catalogs(truth, est))
    assert result["n_matched"] == 4
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["n_true_galaxy_est_galaxy"] == 1
    assert result["n_true_galaxy_est_star"] == 1
    assert result["n_true_star_est_star"] == 2
    assert result["n_true_star_est_galaxy"] == 0


def test_classification_needs_source_type():
    truth = _catalog([[(2, 2, 20, 1)]])
    bare = FullCatalog(20, 20, {"n_sources": truth["n_sources"], "plocs": truth["plocs"]})
    matches = match_full_catalogs(truth, bare)
    with pytest.raises(BlissValueError, match="source_type"):
        classification_metrics(truth, bare, matches)
    assert "classification_accuracy" not in detection_metrics(truth, bare, matches)


def test_compare_counts():
    truth = _catalog([[(2, 2, 19, 0), (8, 8, 21, 0)], [(3, 3, 21.5, 0)]])
    est = _catalog([[(2, 2, 19, 0)], [(3, 3, 21.5, 0), (9, 9, 19.5, 0), (9, 1, 30, 0)]])
    result = compare_counts(truth, est, mag_bins=[18, 20, 22])
    assert result["n_true_per_image"] == [2, 1]
    assert result["n_est_per_image"] == [1, 3]
    assert (result["n_true"], result["n_est"]) == (3, 4)
    assert result["n_true_per_bin"] == [1, 2]
    assert result["n_est_per_bin"] == [2, 1]


def test_bad_inputs_raise():
    truth = _catalog([[(2, 2, 19, 0)], [(3, 3, 20, 0)]])
    matches = match_full_catalogs(truth, truth)
    with pytest.raises(BlissValueError, match="mag_bins"):
        detection_metrics(truth, truth, matches, mag_bins=[20, 18])
    with pytest.raises(BlissValueError, match="one"):
        detection_metrics(truth, truth, matches[:1])
    with pytest.raises(BlissValueError, match="sources"):
        detection_metrics(truth, truth, [(torch.tensor([1]), torch.tensor([0])), matches[1]])
    with pytest.raises(BlissShapeError, match="matches"):
        detection_metrics(truth, truth, [(torch.tensor([0]), torch.tensor([0, 0])), matches[1]])
    with pytest.raises(BlissValueError, match="band"):
        detection_metrics(truth, truth, matches, ref_band=3, mag_bins=[18, 20])
