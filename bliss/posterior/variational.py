"""The factorised variational posterior over a tile catalog."""

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from bliss.catalog import TileCatalog
from bliss.catalog.shapes import check_shape
from bliss.errors import BlissConfigError, BlissValueError
from bliss.posterior.factors import BernoulliFactor, CountFactor, Factor, Gate

__all__ = ["PriorShift", "VariationalPosterior"]


@dataclass(frozen=True)
class PriorShift:
    """Another prior than the training one, as log ratios to it per tile.

    The network's posterior holds its training prior; where a field's differs (a star cluster is
    denser and nearly all stars) the posterior under the field's prior follows from Bayes' rule,
    the likelihood unchanged (:mod:`bliss.predict.density`).

    Attributes:
        count: ``log P'(n) - log P(n)`` for ``n = 0 .. m`` (``b ht wt (m+1)``), or None.
        galaxy: the galaxy log-odds of the new prior minus the training one's (``b ht wt``),
            or None.
    """

    count: Tensor | None = None
    galaxy: Tensor | None = None


class VariationalPosterior:
    """A product of factors, one per catalog key, for every tile.

    The count factor models ``n_sources``; every other factor models one key for each of the
    ``m`` slots, and its log-likelihood counts only on the slots its gate selects (slots holding
    a source, or galaxies only). Raw parameters are laid out per tile as
    ``[count params | factor_1 (m x p_1) | factor_2 (m x p_2) | ...]`` in the order of ``factors``.

    Args:
        factors: mapping name -> factor. Exactly one :class:`CountFactor` and a factor for
            ``locs`` are required. Case studies add entries (shear, redshift, ...) by name, and
            drop one by setting it to ``None`` (``null`` in a Hydra preset, e.g. the galaxy
            factors of a stars-only model).
        max_sources: ``m``; must equal the count factor's.

    Example:
        >>> from bliss.posterior.factors import TruncatedNormalFactor
        >>> posterior = VariationalPosterior(
        ...     {"n_sources": CountFactor(1), "locs": TruncatedNormalFactor("locs", dim=2)}, 1)
        >>> posterior.n_params
        5
    """

    def __init__(
        self, factors: Mapping[str, Factor | CountFactor | None], max_sources: int
    ) -> None:
        factors = {name: factor for name, factor in factors.items() if factor is not None}
        counts = [name for name, f in factors.items() if isinstance(f, CountFactor)]
        if len(counts) != 1:
            raise BlissConfigError(
                f"posterior.factors has {len(counts)} CountFactor entries ({counts}); expected exactly one."
            )
        self.count_name = counts[0]
        self.count: CountFactor = factors[self.count_name]
        if self.count.max_sources != max_sources:
            raise BlissConfigError(
                f"posterior.factors.{self.count_name}.max_sources={self.count.max_sources} but "
                f"max_sources={max_sources}; make them equal (both follow prior.max_sources)."
            )
        self.slot_factors: dict[str, Factor] = {
            n: f for n, f in factors.items() if n != self.count_name
        }
        for name, factor in self.slot_factors.items():
            if not isinstance(factor, Factor):
                raise BlissConfigError(
                    f"posterior.factors.{name} is a {type(factor).__name__}; expected a "
                    "bliss.posterior.factors.Factor subclass."
                )
        if "locs" not in {f.key for f in self.slot_factors.values()}:
            raise BlissConfigError("posterior.factors has no factor for `locs`; add one.")
        self.max_sources = max_sources

    @property
    def names(self) -> list[str]:
        """Factor names, count first."""
        return [self.count_name, *self.slot_factors]

    @property
    def n_params(self) -> int:
        """Raw parameters per tile ``p``."""
        return self.count.n_params + self.max_sources * sum(
            f.n_params for f in self.slot_factors.values()
        )

    def split(self, params: Tensor) -> dict[str, Tensor]:
        """Split raw parameters by factor.

        Args:
            params: shape ``b ht wt p``.

        Returns:
            The count factor's ``b ht wt p_0`` and each slot factor's ``b ht wt m p_i``.
        """
        check_shape("params", params, "b ht wt p", {"p": self.n_params})
        sizes = [self.count.n_params] + [
            self.max_sources * f.n_params for f in self.slot_factors.values()
        ]
        chunks = torch.split(params, sizes, dim=-1)
        out = {self.count_name: chunks[0]}
        for (name, _), chunk in zip(self.slot_factors.items(), chunks[1:], strict=True):
            out[name] = rearrange(chunk, "b ht wt (m p) -> b ht wt m p", m=self.max_sources)
        return out

    def log_prob(self, params: Tensor, truth: TileCatalog) -> Tensor:
        """Log posterior density of a true catalog, per tile.

        Args:
            params: shape ``b ht wt p``.
            truth: the catalog whose density is evaluated (same ``b ht wt`` and ``m``).

        Returns:
            Shape ``b ht wt``.
        """
        split = self.split(params)
        if truth.max_sources != self.max_sources:
            raise BlissValueError(
                f"true catalog has max_sources={truth.max_sources}, the posterior {self.max_sources}; "
                "train with the prior.max_sources the encoder was built for."
            )
        total = self.count.log_prob(split[self.count_name], truth["n_sources"])
        masks = {Gate.SOURCE: truth.is_on_mask, Gate.GALAXY: truth.galaxy_mask}
        for name, factor in self.slot_factors.items():
            if factor.key not in truth:
                raise BlissValueError(
                    f"posterior.factors.{name} models catalog key `{factor.key}`, which the catalog "
                    f"lacks (keys: {truth.keys()}); fix the factor's key or the simulator."
                )
            mask = masks[factor.gate]
            value = torch.where(
                rearrange(mask, "... -> ... 1"), truth[factor.key], factor.safe_value
            )
            per_slot = factor.log_prob(split[name], value)
            total = total + torch.where(mask, per_slot, 0.0).sum(-1)
        return total

    def _assemble(
        self, tile_slen: int, n_sources: Tensor, values: dict[str, Tensor]
    ) -> TileCatalog:
        on = torch.arange(self.max_sources, device=n_sources.device) < rearrange(
            n_sources, "... -> ... 1"
        )
        data: dict[str, Tensor] = {"n_sources": n_sources}
        for key, value in values.items():
            data[key] = torch.where(rearrange(on, "... -> ... 1"), value, 0.0)
        catalog = TileCatalog(tile_slen, data)
        galaxy = rearrange(catalog.galaxy_mask, "... -> ... 1")
        for factor in self.slot_factors.values():
            if factor.gate == Gate.GALAXY:
                data[factor.key] = torch.where(galaxy, data[factor.key], 0.0)
        return TileCatalog(tile_slen, data)

    def sample(self, params: Tensor, tile_slen: int) -> TileCatalog:
        """Draw one catalog from the posterior of every tile (tiles independent given ``params``)."""
        split = self.split(params)
        n_sources = self.count.sample(split[self.count_name])
        values = {f.key: f.sample(split[n]).to(params.dtype) for n, f in self.slot_factors.items()}
        return self._assemble(tile_slen, n_sources, values)

    def point_estimate(self, params: Tensor, tile_slen: int, threshold: float = 0.5) -> TileCatalog:
        """The catalog of posterior point estimates; slots are on where ``P(n > j) > threshold``."""
        split = self.split(params)
        n_sources = self.count.point_estimate(split[self.count_name], threshold)
        values = {f.key: f.point_estimate(split[n]) for n, f in self.slot_factors.items()}
        return self._assemble(tile_slen, n_sources, values)

    def quantiles(self, params: Tensor, q: float) -> dict[str, Tensor]:
        """The ``q`` quantile of every slot factor, keyed by catalog key (``b ht wt m d``)."""
        split = self.split(params)
        return {f.key: f.quantile(split[n], q) for n, f in self.slot_factors.items()}

    def with_interval_ends(
        self, estimate: TileCatalog, params: Tensor, quantiles: tuple[float, ...]
    ) -> TileCatalog:
        """``estimate`` with ``fluxes@<q>`` and ``plocs@<q>`` (pixels) for every ``q``.

        The keys :func:`bliss.metrics.calibration.binned_coverage` and ``interval_hits`` read,
        from the posterior ``params`` the estimate was decided with.
        """
        data = dict(estimate.items())
        for q in quantiles:
            ends = self.quantiles(params, q)
            data[f"fluxes@{q:g}"] = ends["fluxes"]
            data[f"plocs@{q:g}"] = estimate.plocs(ends["locs"])
        return TileCatalog(estimate.tile_slen, data)

    def reweight(self, params: Tensor, shift: PriorShift) -> Tensor:
        """``params`` moved to another prior of counts and source types (Bayes' rule).

        The likelihood is unchanged: the count factor's posterior gains ``shift.count`` (see
        :meth:`CountFactor.reweight`) and every slot's ``source_type`` logit ``shift.galaxy``.

        Raises:
            BlissValueError: ``shift.galaxy`` is given but no Bernoulli factor models
                ``source_type``.
        """
        if shift.count is not None:
            n = self.count.n_params
            params = torch.cat(
                [self.count.reweight(params[..., :n], shift.count), params[..., n:]], dim=-1
            )
        if shift.galaxy is not None:
            start = self.count.n_params
            for factor in self.slot_factors.values():
                width = self.max_sources * factor.n_params
                if factor.key == "source_type" and isinstance(factor, BernoulliFactor):
                    logits = params[..., start : start + width] + shift.galaxy.to(params)[..., None]
                    return torch.cat(
                        [params[..., :start], logits, params[..., start + width :]], dim=-1
                    )
                start += width
            raise BlissValueError(
                "a galaxy-fraction shift was given, but no Bernoulli factor of the posterior "
                f"models `source_type` (factors: {self.names})."
            )
        return params

    def prob_source(self, params: Tensor) -> Tensor:
        """``P(n_sources > j)`` for each slot. Shape ``b ht wt m``."""
        return self.count.prob_at_least(self.split(params)[self.count_name])

    def prob_galaxy(self, params: Tensor, key: str = "source_type") -> Tensor | None:
        """``P(galaxy)`` for each slot (``b ht wt m``), when a factor models ``source_type``."""
        split = self.split(params)
        for name, factor in self.slot_factors.items():
            if factor.key == key and hasattr(factor, "probability"):
                return factor.probability(split[name])[..., 0]
        return None
