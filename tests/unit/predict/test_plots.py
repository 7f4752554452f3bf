"""The detection PNG: FITS orientation, named band and stretch, insets for large images."""

import numpy as np
from matplotlib.figure import Figure

from bliss.predict.plots import STRETCH, _draw, _inset_boxes, plot_detections


def detections(rng, n=40):
    x = np.concatenate([rng.uniform(480, 520, n), [50.0, 300.0]])  # a crowd, then two others
    y = np.concatenate([rng.uniform(80, 120, n), [600.0, 300.0]])
    flux = np.concatenate([np.ones(n), [1000.0, 2.0]])  # the brightest at (50, 600)
    return {"x": x, "y": y, "flux": flux, "prob_galaxy": rng.uniform(0, 1, n + 2)}


def test_rows_run_upwards_as_in_fits_viewers():
    image = np.zeros((30, 40))
    image[25, 5] = 100.0  # row 25: near the top in FITS orientation
    axes = Figure().add_subplot()
    _draw(axes, image, 1.0, (0, 30, 0, 40), {"x": np.array([5.0]), "y": np.array([25.0])}, None, 30)
    bottom, top = axes.get_ylim()
    assert bottom < top and (bottom, top) == (-0.5, 29.5)
    assert axes.images[0].origin == "lower"
    assert "pixel" in axes.get_xlabel() and "pixel" in axes.get_ylabel()


def test_large_images_get_insets_on_the_crowd_the_brightest_and_the_centre(tmp_path):
    rng = np.random.default_rng(0)
    found = detections(rng)
    boxes = dict(_inset_boxes(650, 700, found, 200))
    assert list(boxes) == ["most crowded", "brightest", "centre"]
    r0, r1, c0, c1 = boxes["most crowded"]
    assert r0 <= 80 and r1 >= 120 and c0 <= 480 and c1 >= 520  # the whole crowd
    r0, r1, c0, c1 = boxes["brightest"]
    assert r0 <= 600 < r1 and c0 <= 50 < c1
    assert all(r1 - r0 == c1 - c0 == 200 for r0, r1, c0, c1 in boxes.values())
    image = rng.poisson(100.0, (650, 700)).astype(np.float32)
    path = plot_detections(image, 100.0, tmp_path / "big.png", found, title="big.fits", band="r")
    assert path.stat().st_size > 10_000
    # a small image has no insets
    assert _inset_boxes(200, 200, found, 200) == [("most crowded", (0, 200, 0, 200))]


def test_the_stretch_is_named():
    assert "asinh" in STRETCH and "sky" in STRETCH
