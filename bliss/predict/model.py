"""What predict needs to know about a trained model, read from the config in its checkpoint."""

from collections.abc import Mapping
from typing import Any

from bliss.protocols import ModelConditions

__all__ = ["model_conditions"]

#: the prior whose count per tile is Poisson with one rate (``density_per_arcmin2``)
_CONSTANT_DENSITY_PRIOR = "bliss.simulator.prior.CatalogPrior"


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
    prior = model_config.get("prior") or {}
    return ModelConditions(
        bands=tuple(bands),
        image_size_px=None if image_size is None else int(image_size),
        magzero=tuple(float(magzero[b]) for b in bands) if has_magzero else None,
        observed_psfs=observed is not None,
        psf_halo=None if halo is None else dict(halo),
        count_rate_per_tile=_count_rate(prior),
        galaxy_fraction=_galaxy_fraction(prior),
    )


def _count_rate(prior: Mapping[str, Any]) -> float | None:
    """The constant Poisson rate per tile of a :class:`CatalogPrior` (its subclasses vary it)."""
    keys = ("density_per_arcmin2", "tile_slen", "pixel_scale_arcsec")
    if prior.get("_target_") != _CONSTANT_DENSITY_PRIOR or any(prior.get(k) is None for k in keys):
        return None
    tile_arcmin = float(prior["tile_slen"]) * float(prior["pixel_scale_arcsec"]) / 60
    return float(prior["density_per_arcmin2"]) * tile_arcmin**2


def _galaxy_fraction(prior: Mapping[str, Any]) -> float | None:
    """The constant galaxy share of a :class:`CatalogPrior` (None for another prior or 0 / 1)."""
    if prior.get("_target_") != _CONSTANT_DENSITY_PRIOR:
        return None
    fraction = float(prior.get("prob_galaxy", 0.5))  # CatalogPrior's default
    return fraction if 0 < fraction < 1 else None
