"""compare_with_reference on a tiny synthetic case with a known answer."""

import math

import pytest
import torch

from bliss.catalog import FullCatalog
from bliss.catalog.convert import mag_to_nmgy
from bliss.errors import BlissValueError
from bliss.metrics.reference import compare_with_reference

BINS = [17.0, 19.0, 22.0]


def _catalog(rows: list[tuple[float, float, float, int]]) -> FullCatalog:
    """``(row, col, r mag, galaxy)`` per source -> a one-image, one-band catalog."""
    plocs = torch.tensor([[r, c] for r, c, _, _ in rows]).view(1, -1, 2)
    mags = torch.tensor([m for _, _, m, _ in rows], dtype=torch.float64)
    return FullCatalog(
        100,
        100,
        {
            "n_sources": torch.tensor([len(rows)]),
            "plocs": plocs,
            "fluxes": mag_to_nmgy(mags).float().view(1, -1, 1),
            "source_type": torch.tensor([float(g) for *_, g in rows]).view(1, -1, 1),
        },
    )


#: A, B (bin 1), C, D (bin 2) and E (don't care, bin 1)
REFERENCE = _catalog(
    [
        (10, 10, 18.0, 0),
        (30, 30, 18.5, 1),
        (50, 50, 21.5, 0),
        (70, 70, 21.2, 1),
        (90, 90, 18.0, 0),
    ]
)
#: a (A, +0.2, star), b (B, -0.1, called a star), d (D, +0.4), e (E), f spurious, g 3 px off C
ESTIMATE = _catalog(
    [
        (10.5, 10, 18.2, 0),
        (30, 31, 18.4, 0),
        (70, 70.5, 21.6, 1),
        (90, 90, 18.1, 0),
        (20, 80, 21.8, 1),
        (50, 53, 21.4, 0),
    ]
)
DONT_CARE = torch.tensor([False, False, False, False, True])


def test_known_answer_per_bin():
    comparison = compare_with_reference(
        REFERENCE, ESTIMATE, DONT_CARE, band=0, match_dist_px=1.5, mag_bins=BINS
    )
    bright, faint = comparison.metrics["per_bin"]
    assert (bright["n_reference"], bright["n_detected"], bright["n_matched"]) == (2, 2, 2)
    assert bright["completeness"] == bright["purity"] == 1.0
    assert bright["type_agreement"] == 0.5
    assert bright["delta_mag_median"] == pytest.approx(0.05, abs=1e-4)
    assert (faint["n_reference"], faint["n_detected"], faint["n_matched"]) == (2, 3, 1)
    assert faint["completeness"] == 0.5
    assert faint["purity"] == pytest.approx(1 / 3)
    assert faint["type_agreement"] == 1.0
    assert faint["delta_mag_median"] == pytest.approx(0.4, abs=1e-4)
    overall = comparison.metrics["all"]
    assert overall["completeness"] == 0.75
    assert overall["purity"] == pytest.approx(3 / 5)
    assert overall["type_agreement"] == pytest.approx(2 / 3)
    assert overall["delta_mag_median"] == pytest.approx(0.2, abs=1e-4)
    assert comparison.metrics["confusion"]["n_true_galaxy_est_star"] == 1
    assert comparison.metrics["n_reference_dont_care"] == 1
    assert comparison.metrics["n_detected_dont_care"] == 1
    assert comparison.reference_kept.tolist() == [True] * 4 + [False]
    assert comparison.estimate_kept.tolist() == [True] * 3 + [False, True, True]


def test_dont_care_objects_count_when_not_ignored():
    no_dont_care = torch.zeros(5, dtype=torch.bool)
    comparison = compare_with_reference(
        REFERENCE, ESTIMATE, no_dont_care, band=0, match_dist_px=1.5, mag_bins=BINS
    )
    bright = comparison.metrics["per_bin"][0]
    assert (bright["n_reference"], bright["n_detected"], bright["n_matched"]) == (3, 3, 3)


def test_empty_bins_are_nan_and_a_wider_match_finds_the_offset_source():
    comparison = compare_with_reference(
        REFERENCE, ESTIMATE, DONT_CARE, band=0, match_dist_px=3.5, mag_bins=[10, 12, 19, 22]
    )
    empty, _, faint = comparison.metrics["per_bin"]
    assert empty["n_reference"] == 0 and math.isnan(empty["completeness"])
    assert math.isnan(empty["delta_mag_median"])
    assert faint["completeness"] == 1.0
    with pytest.raises(BlissValueError, match="strictly increasing"):
        compare_with_reference(
            REFERENCE, ESTIMATE, DONT_CARE, band=0, match_dist_px=1, mag_bins=[18]
        )
