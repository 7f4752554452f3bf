"""`bliss mode=predict survey=lsst_coadd` (or `survey=lsst`) runs the shipped LSST ten-year
(or single-visit) model on an LSST-like image."""

import numpy as np
import pytest
from astropy.table import Table

from bliss.cli.main import run
from tests.conftest import compose_config

# survey, its shipped model, and a magnitude bright enough to be certain at its depth
SURVEYS = {
    # r < 22: S/N > 100 at ten-year depth
    "lsst_coadd": ("lsst_dc2.ckpt", 22.0),
    # r < 21.5: S/N > 60 for a point source in one visit, > 20 for the prior's galaxies
    "lsst": ("lsst_visit.ckpt", 21.5),
}


@pytest.fixture(scope="module", params=list(SURVEYS))
def field(request, tmp_path_factory):
    survey = request.param
    root = tmp_path_factory.mktemp(survey)
    # the default prior's stars and galaxies (no fpfs needed), bright enough to be certain
    run(
        compose_config(
            [
                "mode=simulate",
                f"survey={survey}",
                "simulator.image_size=64",
                "simulate.n_fields=1",
                f"simulate.output={root}/sim",
                "prior.density_per_arcmin2=300",
            ],
            root,
        )
    )
    return survey, root


def test_the_plain_command_picks_the_lsst_model_and_finds_bright_sources(field):
    survey, field = field
    checkpoint, bright_mag = SURVEYS[survey]
    out = field / "catalog.fits"
    run(
        compose_config(
            [
                "mode=predict",
                f"survey={survey}",
                f"predict.input={field}/sim/field_0000.fits",
                f"predict.output={out}",
                "predict.plot=false",
            ],
            field,
        )
    )
    table = Table.read(out)
    assert table.meta["CKPT"] == checkpoint
    assert {"flux_y", "e1", "e2", "e1_lo", "e2_hi"} <= set(table.colnames)
    truth = Table.read(field / "sim" / "truth_0000.fits")
    r = 22.5 - 2.5 * np.log10(np.asarray(truth["flux_r"], dtype=float))
    bright = truth[r < bright_mag]
    assert len(bright) >= 2
    est = np.stack([np.asarray(table["x"]), np.asarray(table["y"])], -1)
    for source in bright:
        # found within 1 px (0.2 arcsec)
        assert np.hypot(est[:, 0] - source["x"], est[:, 1] - source["y"]).min() < 1.0
