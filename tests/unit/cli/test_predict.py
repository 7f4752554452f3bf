"""``mode=predict`` config: the input convention and check-image keys reach the right places."""

from bliss.cli.predict import catalog_fingerprint
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
