"""What predict needs to know about a trained model, read from the config in its checkpoint."""

from collections.abc import Mapping
from typing import Any

from bliss.protocols import ModelConditions

__all__ = ["model_conditions"]


def model_conditions(bands: tuple[str, ...], model_config: Mapping[str, Any]) -> ModelConditions:
    """The :class:`~bliss.protocols.ModelConditions` of a model.

    Args:
        bands: the encoder's bands, in channel order.
        model_config: the config recorded in its checkpoint (``bliss_config``).
    """
    simulator = model_config.get("simulator") or {}
    observed = (simulator.get("conditions") or {}).get("observed")
    magzero = (model_config.get("survey") or {}).get("magzero")
    has_magzero = isinstance(magzero, Mapping) and all(b in magzero for b in bands)
    image_size = simulator.get("image_size")
    halo = (observed or {}).get("halo")
    return ModelConditions(
        bands=tuple(bands),
        image_size_px=None if image_size is None else int(image_size),
        magzero=tuple(float(magzero[b]) for b in bands) if has_magzero else None,
        observed_psfs=observed is not None,
        psf_halo=None if halo is None else dict(halo),
    )
