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
