"""`bliss mode=predict survey=lsst_coadd` runs the shipped LSST model on an LSST-like image."""

import numpy as np
import pytest
from astropy.table import Table

from bliss.cli.main import run
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    root = tmp_path_factory.mktemp("lsst")
    # the default prior's stars and galaxies (no fpfs needed), bright enough to be certain
    run(
        compose_config(
            [
                "mode=simulate",
                "survey=lsst_coadd",
                "simulator.image_size=64",
                "simulate.n_fields=1",
                f"simulate.output={root}/sim",
                "prior.density_per_arcmin2=300",
            ],
            root,
        )
    )
    return root


def test_the_plain_command_picks_the_lsst_model_and_finds_bright_sources(field):
    out = field / "catalog.fits"
    run(
        compose_config(
            [
                "mode=predict",
                "survey=lsst_coadd",
                f"predict.input={field}/sim/field_0000.fits",
                f"predict.output={out}",
                "predict.plot=false",
            ],
            field,
        )
    )
    table = Table.read(out)
    assert table.meta["CKPT"] == "lsst_dc2.ckpt"
    assert {"flux_y", "e1", "e2", "e1_lo", "e2_hi"} <= set(table.colnames)
    truth = Table.read(field / "sim" / "truth_0000.fits")
    r = 22.5 - 2.5 * np.log10(np.asarray(truth["flux_r"], dtype=float))
    bright = truth[r < 22]
    assert len(bright) >= 2
    est = np.stack([np.asarray(table["x"]), np.asarray(table["y"])], -1)
    for source in bright:
        # r < 22 has S/N > 100 at ten-year depth: found within 1 px (0.2 arcsec)
        assert np.hypot(est[:, 0] - source["x"], est[:, 1] - source["y"]).min() < 1.0
