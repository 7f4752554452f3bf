"""The flags bit mask on constructed cases: one source per condition, and clean controls."""

import numpy as np
import pytest

from bliss.catalog.flags import FLAG_BITS, bright_radius_px, flag_value, source_flags
from bliss.errors import BlissValueError

SHAPE = (100, 120)
FWHM_PX = 3.0


def flags_of(plocs, missing=None, ref_mag=None, prob_source=None):
    missing = np.zeros(SHAPE, bool) if missing is None else missing
    return source_flags(
        np.asarray(plocs, float), missing, FWHM_PX, ref_mag=ref_mag, prob_source=prob_source
    )


def test_bits_are_distinct_and_named():
    bits = [bit for bit, _ in FLAG_BITS.values()]
    assert sorted(bits) == list(range(len(bits)))
    assert flag_value("edge", "blended") == 2 + 8
    with pytest.raises(BlissValueError, match="saturation"):
        flag_value("saturation")


def test_an_isolated_bright_enough_source_in_the_middle_is_clean():
    assert flags_of([[50.5, 60.5]], ref_mag=np.array([20.0]), prob_source=np.array([0.99])) == [0]


def test_masked_pixels_within_the_footprint_set_masked():
    missing = np.zeros(SHAPE, bool)
    missing[50, 63] = True  # 3 px (1 FWHM) from the first source's centre: a SATUR pixel
    missing[20, 20:25] = True  # 5 px or more from the second: outside its footprint
    flags = flags_of([[50.5, 60.5], [25.5, 22.5]], missing)
    assert flags.tolist() == [flag_value("masked"), 0]


def test_a_source_on_a_nan_centre_is_masked():
    missing = np.zeros(SHAPE, bool)
    missing[40:45, 40:45] = True  # a saturated core, NaN in SDSS frames
    assert flags_of([[42.5, 42.5]], missing).tolist() == [flag_value("masked")]


@pytest.mark.parametrize(("row", "col"), [(3.0, 60.0), (96.0, 60.0), (50.0, 7.9), (50.0, 115.0)])
def test_centres_near_any_border_set_edge(row, col):
    assert flags_of([[row, col]]).tolist() == [flag_value("edge")]


def test_near_bright_within_the_radius_of_a_bright_source_only():
    # a 14th-magnitude star: radius min(150, 30 * 10**0.4) = 75 px
    radius = float(bright_radius_px(np.array([14.0]))[0])
    assert radius == pytest.approx(30 * 10**0.4)
    plocs = [[50.0, 20.0], [50.0, 20.0 + radius - 1], [50.0, 20.0 + radius + 1]]
    flags = flags_of(plocs, ref_mag=np.array([14.0, 21.0, 21.0]))
    near = flag_value("near_bright")
    # the bright star itself is not flagged by itself, the inner neighbour is, the outer is not
    assert [bool(f & near) for f in flags] == [False, True, False]
    # a faint neighbour (m >= 16) flags nothing
    assert not (flags_of(plocs, ref_mag=np.array([16.5, 21.0, 21.0])) & near).any()


def test_blended_pairs_within_two_fwhm_both_get_the_bit():
    plocs = [[50.0, 50.0], [50.0, 55.9], [50.0, 70.0]]  # 5.9 < 2 FWHM = 6 px; 14.1 > 6
    assert flags_of(plocs).tolist() == [flag_value("blended")] * 2 + [0]


def test_low_probability_and_combinations():
    plocs = [[50.0, 50.0], [50.0, 80.0], [4.0, 80.0]]
    flags = flags_of(plocs, prob_source=np.array([0.79, 0.8, 0.5]))
    assert flags.tolist() == [flag_value("low_prob"), 0, flag_value("low_prob", "edge")]


def test_empty_catalog_and_bad_inputs():
    assert flags_of(np.zeros((0, 2))).shape == (0,)
    with pytest.raises(BlissValueError, match="fwhm_px=0"):
        source_flags(np.zeros((1, 2)), np.zeros(SHAPE, bool), 0.0)
    with pytest.raises(BlissValueError, match="prob_source has shape"):
        flags_of([[50.0, 50.0]], prob_source=np.array([0.9, 0.9]))


def test_saturated_pixels_within_the_footprint_set_saturated_only_there():
    saturated = np.zeros(SHAPE, bool)
    saturated[50, 62] = True  # 2 px from the first source: inside its 3 px footprint
    saturated[80, 100] = True  # far from both
    flags = source_flags(
        np.array([[50.5, 60.5], [25.5, 22.5]]),
        np.zeros(SHAPE, bool),
        FWHM_PX,
        saturated=saturated,
    )
    assert flags.tolist() == [flag_value("saturated"), 0]
    with pytest.raises(BlissValueError, match="saturated has shape"):
        source_flags(
            np.array([[5.0, 5.0]]), np.zeros(SHAPE, bool), FWHM_PX, saturated=saturated[:5]
        )
