"""Evaluate on a tiny field with a known answer: a perfect predictor, and sep on bright stars."""

from types import SimpleNamespace

import numpy as np
import pytest
from astropy.table import Table

from bliss.cli.generate import build_simulator
from bliss.errors import BlissConfigError
from bliss.evaluate.truth import evaluate_files, expand_inputs
from bliss.simulator.field import write_simulated_field
from tests.conftest import compose_config, one_image_catalog

BANDS = ("u", "g", "r", "i", "z")


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("field")
    cfg = compose_config(
        [
            "mode=evaluate",
            "simulator.image_size=96",
            "prior.density_per_arcmin2=40",
            "prior.prob_galaxy=0.0",
            "prior.star_flux.min_nmgy=20.0",
            "prior.star_flux.max_nmgy=200.0",
        ],
        tmp,
    )
    simulator = build_simulator(cfg)
    write_simulated_field(simulator, 11, tmp / "f.fits", tmp / "f_truth.fits")
    return simulator.survey, tmp / "f.fits", tmp / "f_truth.fits"


class PerfectPredictor:
    """Returns the truth itself, with intervals that always contain it."""

    def __init__(self, truth_path, stars_only=False):
        self.encoder = SimpleNamespace(bands=BANDS)
        self.truth = Table.read(truth_path)
        self.stars_only = stars_only

    def predict(self, image, threshold, quantiles):
        t = self.truth
        fluxes = np.stack([np.asarray(t[f"flux_{b}"]) for b in BANDS], -1)
        rows = {
            "row": np.asarray(t["y"]) + 0.5,
            "col": np.asarray(t["x"]) + 0.5,
            "prob_source": np.ones(len(t)),
            "prob_galaxy": np.asarray(t["source_type"], float),
            "fluxes": fluxes,
        }
        if self.stars_only:  # a model without a type factor (sdss_crowded)
            del rows["prob_galaxy"]
        plocs = np.stack([rows["row"], rows["col"]], -1)
        for q in quantiles:
            rows[f"fluxes@{q:g}"] = fluxes * (0.5 if q < 0.5 else 2.0)
            rows[f"plocs@{q:g}"] = plocs + (-0.5 if q < 0.5 else 0.5)
        _, height, width = image.images.shape
        return one_image_catalog(rows, height, width)


def _evaluate(predictor, field, tmp_path):
    survey, image, truth = field
    return evaluate_files(
        predictor,
        survey,
        [image],
        [truth],
        threshold=0.5,
        match_dist_px=1.5,
        mag_bins=[16, 19, 20, 21, 22, 23],
        output=tmp_path / "out",
    )


def test_perfect_predictor_scores_one_and_sep_finds_bright_stars(field, tmp_path):
    survey, image, truth = field
    n_true = len(Table.read(truth))
    assert n_true >= 5
    results = _evaluate(PerfectPredictor(truth), field, tmp_path)
    ours = results["bliss"]
    assert ours["precision"] == ours["recall"] == ours["f1"] == 1.0
    assert ours["classification_accuracy"] == 1.0
    assert ours["mag_abs_err_median"] == 0.0
    assert ours["coverage90_flux"] == 1.0
    # every cell of the per-bin, per-type table: all true values inside, no bias
    cells = [row for row in ours["calibration"] if row["n"]]
    assert sum(row["n"] for row in cells) == n_true
    assert all(row["type"] == "star" for row in cells)
    for row in cells:
        assert row["coverage_x"] == row["coverage_y"] == row["coverage_flux_u"] == 1.0
        assert row["mag_bias_median"] == pytest.approx(0.0, abs=1e-6)
    assert ours["reliability"]["levels"] == [0.5, 0.9]
    assert ours["reliability"]["star position"] == [1.0, 1.0]
    assert "galaxy position" not in ours["reliability"]
    # the truth table's disk_frac splits galaxies by profile: two profiles x five bins, empty
    profiles = ours["galaxy_profiles"]
    assert len(profiles) == 10 and {row["profile"] for row in profiles} == {
        "bulge-dominated",
        "disk-dominated",
    }
    assert all(row["n"] == 0 for row in profiles)
    # isolated stars brighter than r = 19.2 at 96 x 96 px: sep finds nearly all of them
    assert results["sep"]["recall"] >= 0.8
    for name in (
        "metrics.json",
        "metrics.csv",
        "f1_by_magnitude.png",
        "detections_bliss.png",
        "calibration.csv",
        "reliability.png",
    ):
        assert (tmp_path / "out" / name).exists()


def test_inputs_and_truths_must_pair(field):
    survey, image, truth = field
    with pytest.raises(BlissConfigError, match="one truth table per image"):
        evaluate_files(
            PerfectPredictor(truth),
            survey,
            [image, image],
            [truth],
            threshold=0.5,
            match_dist_px=1.5,
            mag_bins=[16, 23],
        )


def test_expand_inputs_errors(tmp_path):
    with pytest.raises(BlissConfigError, match="evaluate.input"):
        expand_inputs(None, "evaluate.input")
    with pytest.raises(OSError, match="matches no file"):
        expand_inputs(str(tmp_path / "*.fits"), "evaluate.input")


def test_a_stars_only_model_is_evaluated(field, tmp_path):
    survey, image, truth = field
    results = _evaluate(PerfectPredictor(truth, stars_only=True), field, tmp_path)
    assert results["bliss"]["f1"] == 1.0
    assert (tmp_path / "out" / "detections_bliss.png").exists()
