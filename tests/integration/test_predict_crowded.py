"""The plain `bliss mode=predict survey=sdss_frames` command on a crowded and a sparse SDSS cut-out.

The crowded cut-out is 128 x 128 px of the M2 frame (tests/data/README.md); the sparse one is
the 192 px box of 94-1-12. No flag picks the crowded-field model: the image does.
"""

import warnings
from pathlib import Path

import numpy as np
from astropy.table import QTable

from bliss.catalog.flags import flag_value
from bliss.cli.main import run
from tests.conftest import compose_config

DATA = Path(__file__).parents[1] / "data" / "sdss"


def _predict(tmp_path: Path, field: tuple[int, int, int], *extra: str) -> QTable:
    run_, camcol, number = field
    output = tmp_path / f"{run_}-{'-'.join(extra) or 'default'}.fits".replace("=", "_")
    overrides = [
        "mode=predict",
        "survey=sdss_frames",
        f"survey.data_dir={DATA}",
        f"survey.run={run_}",
        f"survey.camcol={camcol}",
        f"survey.field={number}",
        f"predict.output={output}",
        "predict.plot=false",
        *extra,
    ]
    with warnings.catch_warnings():  # cut-outs are too small for aperture corrections
        warnings.simplefilter("ignore")
        run(compose_config(overrides, tmp_path))
    return QTable.read(output)


def test_the_m2_cut_out_is_cataloged_by_the_crowded_model(tmp_path):
    table = _predict(tmp_path, (2583, 2, 136))
    assert table.meta["CRWDCKPT"] == "sdss_crowded.ckpt"
    assert int(table.meta["CRWDBLKS"]) == 4  # every 64 px block of the 128 px cut-out
    crowded = (np.asarray(table["flags"]) & flag_value("crowded")) > 0
    assert crowded.all()
    assert np.all(np.asarray(table["prob_galaxy"]) == 0)
    bright = int((np.asarray(table["mag_r"]) < 22).sum())
    # the sparse model alone finds a few dozen stars here; the region holds ~0.2 r < 22 stars
    # per px^2 (HST), ~3300 in 128 x 128 px, of which SDSS resolves a part
    sparse = _predict(tmp_path, (2583, 2, 136), "predict.crowded.checkpoint=null")
    sparse_bright = int((np.asarray(sparse["mag_r"]) < 22).sum())
    assert "CRWDBLKS" not in sparse.meta
    assert bright > 5 * sparse_bright and bright > 800
    # the cut-out's saturated r and i pixels (fpM SATUR) flag the stars on them, and only a few
    saturated = (np.asarray(table["flags"]) & flag_value("saturated")) > 0
    assert 0 < saturated.sum() < 0.05 * len(table)
    assert np.all(np.asarray(table["flags"])[saturated] & flag_value("masked"))


def test_a_sparse_field_is_left_to_the_main_model(tmp_path):
    default = _predict(tmp_path, (94, 1, 12))
    assert int(default.meta["CRWDBLKS"]) == 0 and int(default.meta["NCROWDED"]) == 0
    without = _predict(tmp_path, (94, 1, 12), "predict.crowded.checkpoint=null")
    assert len(default) == len(without)
    np.testing.assert_array_equal(np.asarray(default["flux_r"]), np.asarray(without["flux_r"]))
