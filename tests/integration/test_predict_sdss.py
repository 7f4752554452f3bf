"""`bliss mode=predict survey=sdss_frames` on the SDSS cut-out shipped in tests/data."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.table import QTable

from bliss.cli.main import run
from bliss.errors import BlissWarning
from tests.conftest import compose_config

DATA = Path(__file__).parents[1] / "data" / "sdss"


def test_predict_reads_sdss_frames_by_run_camcol_field(tmp_path):
    output = tmp_path / "cat.fits"
    cfg = compose_config(
        [
            "mode=predict",
            "survey=sdss_frames",
            f"survey.data_dir={DATA}",
            "survey.run=94",
            "survey.camcol=1",
            "survey.field=12",
            f"predict.output={output}",
            "predict.plot=false",
        ],
        tmp_path,
    )
    # a 192 px cut-out holds one bright star: too few to measure its aperture corrections
    with pytest.warns(BlissWarning, match="too few stars for an aperture correction"):
        result = run(cfg)
    table = QTable.read(output)
    assert len(table) == len(result["table"]) > 0
    # RA/Dec come from the r-band WCS: run 94 lies on Stripe 82 (Dec within +-1.27 deg)
    assert np.all(np.abs(table["dec"].value) < 1.3)
    assert table.meta["INPUT"].endswith("94/1/12")
    assert table.meta["CKPT"] == "sdss_real.ckpt"  # survey=sdss_frames picks the real-frame model
    assert [float(table.meta[f"APCOR_{band}"]) for band in "UGRIZ"] == [1.0] * 5  # none applied


def test_moffat_trained_models_take_no_psfield_aperture_correction(tmp_path):
    output = tmp_path / "cat.fits"
    overrides = [
        "mode=predict",
        "survey=sdss_frames",
        f"survey.data_dir={DATA}",
        f"predict.output={output}",
        "predict.plot=false",
        "predict.checkpoint=${pkg_path:models/sdss_generalist.ckpt}",
    ]
    with warnings.catch_warnings():  # nothing is measured, so no "too few stars" either
        warnings.simplefilter("error", BlissWarning)
        run(compose_config(overrides, tmp_path))
    assert not any(key.startswith("APCOR") for key in QTable.read(output).meta)


def test_other_surveys_default_to_the_generalist(tmp_path):
    cfg = compose_config(["mode=predict"], tmp_path)
    assert Path(cfg.predict.checkpoint).name == "sdss_generalist.ckpt"
    assert Path(cfg.evaluate.checkpoint).name == "sdss_generalist.ckpt"


def test_aperture_corrections_use_the_halo_the_model_was_trained_with(tmp_path):
    from bliss.cli.model import load_model_and_survey

    overrides = ["mode=predict", "survey=sdss_frames", f"survey.data_dir={DATA}"]
    cfg = compose_config(overrides, tmp_path)
    _, model, survey = load_model_and_survey(cfg.predict.checkpoint, cfg.survey)
    assert model.observed_psfs and survey.aperture_correction
    assert survey.psf_halo == model.psf_halo == {"fraction": 0.06, "fwhm_arcsec": 12.0, "beta": 2.0}
    generalist = "predict.checkpoint=${pkg_path:models/sdss_generalist.ckpt}"
    cfg = compose_config([*overrides, generalist], tmp_path)
    _, _, survey = load_model_and_survey(cfg.predict.checkpoint, cfg.survey)
    assert survey.psf_halo is None
    assert survey.aperture_correction is False  # a Moffat-trained model takes none
