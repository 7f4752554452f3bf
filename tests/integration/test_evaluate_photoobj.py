"""`bliss mode=evaluate evaluate.reference=photoobj` on the SDSS cut-out shipped in tests/data."""

import json
from pathlib import Path

from bliss.cli.main import run
from tests.conftest import compose_config

DATA = Path(__file__).parents[1] / "data" / "sdss"


def test_evaluate_against_photoobj_on_the_cutout(tmp_path, monkeypatch):
    from bliss.surveys.sdss.survey import SdssFrameSurvey

    loaded = []  # the survey as it reads the frame: set up for the model, as mode=predict does
    original = SdssFrameSurvey.load_image
    monkeypatch.setattr(
        SdssFrameSurvey,
        "load_image",
        lambda self, bands: loaded.append(dict(self.psf_halo or {})) or original(self, bands),
    )
    output = tmp_path / "evaluate"
    cfg = compose_config(
        [
            "mode=evaluate",
            "survey=sdss_frames",
            f"survey.data_dir={DATA}",
            "evaluate.reference=photoobj",
            f"evaluate.output={output}",
            "evaluate.photoobj.n_examples=2",
            "evaluate.photoobj.plot_box_px=100",
        ],
        tmp_path,
    )
    results = run(cfg)
    assert loaded == [{"fraction": 0.06, "fwhm_arcsec": 12.0, "beta": 2.0}]  # sdss_real's halo
    # the cut-out's bright isolated star (r = 14.8) is found by both catalogs
    for name in ("bliss", "sep"):
        assert results[name]["per_bin"][0]["mag_lo"] == 14.0
        assert results[name]["per_bin"][0]["n_reference"] == 1
        assert results[name]["per_bin"][0]["completeness"] == 1.0
    written = json.loads((output / "reference_metrics.json").read_text())
    assert written["bliss"]["all"]["n_reference"] == results["bliss"]["all"]["n_reference"]
    for name in ("reference_overlay.png", "reference_delta_mag.png", "disagreements.png"):
        assert (output / name).stat().st_size > 0
