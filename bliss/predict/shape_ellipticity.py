"""Galaxy ellipticities ``e1``, ``e2`` for models whose posterior has shape factors but no ellipticity.

The ellipticity of a galaxy is a function of all six bulge + disk parameters
(:func:`bliss.catalog.ellipticity.galaxy_ellipticity`). Evaluating it at their point estimates is
biased: a galaxy whose orientation is unknown (a flat position-angle posterior) still gets the
mean direction of that posterior and a point-estimate axis ratio below 1, so it is reported as
elongated along a direction the network happens to prefer. On simulated SDSS fields the mean
``e1`` of galaxies brighter than r = 21.5 came out -0.076 +- 0.008 that way (truth -0.014). The
posterior of ``e`` itself, from draws of the six factors (independent given the image, as the
variational posterior is), shrinks to 0 where the orientation is unknown (there: -0.009 +-
0.003). Its median per component is the catalog's ``e1``, ``e2``, its quantiles the intervals.
"""

import torch
from torch import Tensor

from bliss.catalog import FullCatalog
from bliss.catalog.ellipticity import galaxy_ellipticity
from bliss.catalog.io import ELLIPTICITY_KEY
from bliss.catalog.tile import GALAXY_KEYS
from bliss.posterior.variational import VariationalPosterior

__all__ = [
    "N_DRAWS",
    "add_drawn_ellipticity",
    "add_shape_ellipticity",
    "drop_shape_parameters",
    "shape_draws",
    "shape_parameter_columns",
]

#: draws per galaxy: the median's standard error is ~1.25 sd / 8
N_DRAWS = 64
#: the draws' own seed, so that a catalog does not depend on the global random state
SEED = 0
_PREFIX = "shape_params:"
_CLAMPS = {
    "disk_q": (1e-4, 1.0),
    "bulge_q": (1e-4, 1.0),
    "disk_hlr_arcsec": (1e-4, 1e3),
    "bulge_hlr_arcsec": (1e-4, 1e3),
}


def shape_parameter_columns(
    posterior: VariationalPosterior, split: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The raw parameters of the six shape factors, as extra catalog columns.

    They give :func:`shape_draws` (for the ellipticity and galaxy model photometry) and are
    removed by :func:`drop_shape_parameters`. Empty when the posterior lacks a shape factor.
    """
    by_key = {factor.key: name for name, factor in posterior.slot_factors.items()}
    if not all(key in by_key for key in GALAXY_KEYS):
        return {}
    return {f"{_PREFIX}{key}": split[by_key[key]] for key in GALAXY_KEYS}


def shape_draws(catalog: FullCatalog, posterior: VariationalPosterior) -> Tensor | None:
    """``N_DRAWS`` seeded draws of each source's six shape parameters from its posterior.

    Independent of the global random state (seed :data:`SEED`). None when the catalog has no
    shape-parameter columns (see :func:`shape_parameter_columns`). Shape ``N_DRAWS n 6``, in the
    order of :data:`~bliss.catalog.tile.GALAXY_KEYS`.
    """
    if f"{_PREFIX}{GALAXY_KEYS[0]}" not in catalog:
        return None
    factors = {factor.key: factor for factor in posterior.slot_factors.values()}
    n = int(catalog["n_sources"][0])
    if n == 0:
        return torch.zeros(N_DRAWS, 0, len(GALAXY_KEYS))
    devices = [catalog["plocs"].device] if catalog["plocs"].is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(SEED)
        draws = [_draws(factors[key], catalog[f"{_PREFIX}{key}"][0, :n]) for key in GALAXY_KEYS]
    return torch.stack(draws, -1)


def add_shape_ellipticity(
    catalog: FullCatalog,
    posterior: VariationalPosterior,
    quantiles: tuple[float, ...],
    draws: Tensor | None = None,
) -> FullCatalog:
    """Add ``ellipticity`` and ``ellipticity@<q>`` from :func:`shape_draws`.

    ``draws``: the catalog's :func:`shape_draws` where the caller has them already (they are
    drawn here otherwise). A catalog without shape-parameter columns, or with an
    ``ellipticity`` of the model's own factor, is returned as is.
    """
    if ELLIPTICITY_KEY in catalog:
        return catalog
    if draws is None:
        draws = shape_draws(catalog, posterior)
    if draws is None:
        return catalog
    n = int(catalog["n_sources"][0])
    data = dict(catalog.items())
    width = catalog["plocs"].shape[1]
    if n == 0:
        data[ELLIPTICITY_KEY] = torch.zeros(1, width, 2)
        for q in quantiles:
            data[f"{ELLIPTICITY_KEY}@{q:g}"] = torch.zeros(1, width, 2)
        return FullCatalog(catalog.height_px, catalog.width_px, data)
    e = _ellipticity(draws.reshape(N_DRAWS * n, len(GALAXY_KEYS))).reshape(N_DRAWS, n, 2)
    levels = torch.tensor([0.5, *quantiles])
    values = torch.quantile(e, levels, dim=0)  # levels n 2
    for name, value in zip(
        [ELLIPTICITY_KEY, *(f"{ELLIPTICITY_KEY}@{q:g}" for q in quantiles)], values, strict=True
    ):
        padded = torch.zeros(1, width, 2)
        padded[0, :n] = value
        data[name] = padded
    return FullCatalog(catalog.height_px, catalog.width_px, data)


def drop_shape_parameters(catalog: FullCatalog) -> FullCatalog:
    """The catalog without the shape-parameter columns of :func:`shape_parameter_columns`."""
    if f"{_PREFIX}{GALAXY_KEYS[0]}" not in catalog:
        return catalog
    data = {k: v for k, v in catalog.items() if not k.startswith(_PREFIX)}
    return FullCatalog(catalog.height_px, catalog.width_px, data)


def _draws(factor, params: Tensor) -> Tensor:  # noqa: ANN001
    """``N_DRAWS`` draws of a one-dimensional factor for each of ``n`` slots. Shape ``N_DRAWS n``."""
    expanded = params.cpu().float().expand(N_DRAWS, *params.shape)
    return factor.sample(expanded)[..., 0]


def add_drawn_ellipticity(sample: FullCatalog) -> FullCatalog:
    """A joint posterior sample with ``ellipticity``: that of each drawn galaxy's shape.

    A sample that already has it, or lacks a shape key, is returned as is.
    """
    if ELLIPTICITY_KEY in sample or not all(key in sample for key in GALAXY_KEYS):
        return sample
    params = torch.cat([sample[key][0] for key in GALAXY_KEYS], -1)  # n 6
    e = _ellipticity(params)  # stars' zero shapes give finite values; the table hides them
    data = dict(sample.items())
    data[ELLIPTICITY_KEY] = e[None]
    return FullCatalog(sample.height_px, sample.width_px, data)


def _ellipticity(params: Tensor) -> Tensor:
    """:func:`galaxy_ellipticity` of shape rows (``n 6``), with degenerate values clamped. ``n 2``."""
    params = params.detach().cpu().double().clone()
    # a float32 draw of an axis ratio can round to 0 (then 1/q overflows), a radius to 0 or inf
    for key, (low, high) in _CLAMPS.items():
        column = GALAXY_KEYS.index(key)
        params[:, column] = params[:, column].clamp(low, high)
    return torch.from_numpy(galaxy_ellipticity(params.numpy())).float()
