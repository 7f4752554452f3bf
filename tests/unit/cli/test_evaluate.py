"""``mode=evaluate`` config checks (the comparisons themselves: tests/unit/evaluate)."""

import pytest

from bliss.cli.evaluate import run_evaluate
from bliss.errors import BlissConfigError
from tests.conftest import compose_config


def test_config_composes_and_checks(tmp_path):
    cfg = compose_config(["mode=evaluate", "survey=sdss_frames", "evaluate.reference=photoobj"])
    assert cfg.evaluate.photoobj.galaxy_flux == "cmodel"
    assert list(cfg.evaluate.photoobj.ignore_flags) == ["SATUR"]
    assert cfg.evaluate.match_dist_px == 1.5
    with pytest.raises(BlissConfigError, match="'photoobj'"):
        run_evaluate(compose_config(["mode=evaluate", "evaluate.reference=truth"]))
    with pytest.raises(BlissConfigError, match="survey=sdss_frames"):
        run_evaluate(compose_config(["mode=evaluate", "evaluate.reference=photoobj"]))
