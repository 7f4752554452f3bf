"""``mode=predict`` config: the input convention and check-image keys reach the right places."""

import pytest

from bliss.cli.predict import _check_many_supported, catalog_fingerprint
from bliss.errors import BlissConfigError
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


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["predict.sky=subtracted"], "predict.sky=subtracted work with one input"),
        (["predict.check_images=true"], "predict.check_images=true work with one input"),
    ],
)
def test_many_inputs_refuse_what_the_loop_does_not_pass_on(overrides, match):
    _check_many_supported(compose_config(["mode=predict"]).predict)  # the defaults pass
    with pytest.raises(BlissConfigError, match=match):
        _check_many_supported(compose_config(["mode=predict", *overrides]).predict)
