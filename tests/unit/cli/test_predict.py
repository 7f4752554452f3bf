"""``mode=predict`` config: the input convention and check-image keys reach the right places."""

import re
from pathlib import Path

import pytest

from bliss.cli.predict import catalog_fingerprint
from bliss.errors import BlissError
from tests.conftest import compose_config


def test_the_keys_compose_with_their_defaults_and_evaluate_follows_predict():
    cfg = compose_config(["mode=predict", "predict.sky=subtracted"])
    assert cfg.predict.sky == "subtracted" and cfg.predict.check_images is False
    assert cfg.evaluate.sky == "subtracted"


def test_sky_changes_the_fingerprint_and_check_images_does_not():
    base = catalog_fingerprint(compose_config(["mode=predict"]), "hash")
    checked = catalog_fingerprint(
        compose_config(["mode=predict", "predict.check_images=true"]), "hash"
    )
    subtracted = catalog_fingerprint(
        compose_config(["mode=predict", "predict.sky=subtracted"]), "hash"
    )
    assert base == checked != subtracted


def test_a_missing_input_is_reported_before_the_model_loads(tmp_path):
    """No torch import (seconds) before saying that predict.input does not exist."""
    import subprocess
    import sys

    code = f"""
import sys
from hydra import compose, initialize_config_module
from bliss.cli.main import run
from bliss.errors import BlissIOError
with initialize_config_module("bliss.conf", version_base="1.3"):
    cfg = compose("config", overrides=["mode=predict", "predict.input={tmp_path}/none.fits",
                                       "paths.run_dir={tmp_path}"])
try:
    run(cfg)
except BlissIOError as err:
    print("refused:", err)
print("torch loaded:", "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"predict.input={tmp_path}/none.fits does not exist" in out.stdout
    assert "torch loaded: False" in out.stdout


def test_cataloging_one_image_imports_neither_lightning_nor_galsim(tmp_path):
    """Lightning (~3 s) and GalSim (~0.3 s) are for training and simulating, not one catalog."""
    import subprocess
    import sys

    code = f"""
import sys
from hydra import compose, initialize_config_module
from bliss.cli.main import run
with initialize_config_module("bliss.conf", version_base="1.3"):
    cfg = compose("config", overrides=["mode=predict", "predict.output={tmp_path}/cat.fits",
                                       "predict.plot=false", "paths.run_dir={tmp_path}"])
run(cfg)
print("loaded:", sorted(m for m in ("pytorch_lightning", "galsim") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "loaded: []" in out.stdout, out.stdout + out.stderr
    assert (tmp_path / "cat.fits").is_file()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("predict.output=cat.txt", "unknown extension '.txt'"),
        ("predict.plot=maybe", "predict.plot='maybe'; expected true or false"),
        ("predict.galaxy_photometry=1", "predict.galaxy_photometry=1; expected true or false"),
        ("predict.confusion_noise=yes", "predict.confusion_noise='yes'; expected true or false"),
        ("predict.sky=bogus", "predict.sky='bogus'"),
        ("predict.checkpoint=/no/such.ckpt", "predict.checkpoint=/no/such.ckpt does not exist"),
        ("predict.threshold=1.5", "predict.threshold=1.5"),
    ],
)
def test_bad_keys_are_refused_before_the_model_loads(
    tmp_path, monkeypatch, override: str, message: str
) -> None:
    import bliss.cli.model
    from bliss.cli.main import run

    def must_not_load(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model was loaded before the keys were checked")

    monkeypatch.setattr(bliss.cli.model, "load_model_and_survey", must_not_load)
    cfg = compose_config(["mode=predict", override], tmp_path)
    with pytest.raises(BlissError, match=re.escape(message)):
        run(cfg)


def test_a_bad_crowded_setting_is_refused_before_the_model_loads(tmp_path, monkeypatch) -> None:
    import bliss.cli.model
    from bliss.cli.main import run

    def must_not_load(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model was loaded before the keys were checked")

    monkeypatch.setattr(bliss.cli.model, "load_model_and_survey", must_not_load)
    shipped = Path(bliss.cli.model.__file__).parents[1] / "models" / "sdss_crowded.ckpt"
    cfg = compose_config(
        [
            "mode=predict",
            f"predict.crowded.checkpoint={shipped}",
            "predict.crowded.block_px=-3",
        ],
        tmp_path,
    )
    with pytest.raises(BlissError, match="block_px"):
        run(cfg)
