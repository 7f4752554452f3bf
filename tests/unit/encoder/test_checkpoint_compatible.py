"""A checkpoint to fine-tune from must fit the configured encoder, or the error names the key."""

import pytest

from bliss.encoder.checkpoint import check_compatible
from bliss.errors import BlissConfigError

ENCODER = {"bands": ["u", "g", "r"], "posterior": {"factors": {"locs": {}, "fluxes": {}}}}


def _config(spill: float | None) -> dict:
    return {**ENCODER, "context_spill_fwhm_px": spill}


def test_adding_the_light_channels_to_a_model_without_them_is_allowed() -> None:
    check_compatible({"encoder": _config(None)}, _config(3.5), "old.ckpt")
    check_compatible({"encoder": ENCODER}, _config(3.5), "older.ckpt")  # key not yet recorded
    check_compatible({"encoder": _config(3.5)}, _config(3.5), "same.ckpt")


def test_dropping_the_light_channels_names_the_key_and_value() -> None:
    with pytest.raises(BlissConfigError, match=r"encoder.context_spill_fwhm_px=3.5") as info:
        check_compatible({"encoder": _config(3.5)}, _config(None), "shipped.ckpt")
    assert "shipped.ckpt" in str(info.value)


def test_another_light_width_names_both_values() -> None:
    with pytest.raises(BlissConfigError, match=r"the config has 2.0; set .*=3.5"):
        check_compatible({"encoder": _config(3.5)}, _config(2.0), "shipped.ckpt")
