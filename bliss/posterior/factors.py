"""Variational factors: one class per distribution family.

A factor reads the raw network outputs for one catalog key and turns them into a distribution.
Per-source factors see parameters of shape ``... p`` (``p = n_params``) for each slot and model a
value of shape ``... d``; the count factor sees one parameter vector per tile. Scales are
``softplus(raw) + min_scale``: ``min_scale`` is a small floor (configurable) so that bright,
well-measured sources are not forced to be under-confident.
"""

import math
from enum import StrEnum

import torch
import torch.nn.functional as F  # noqa: N812
from einops import rearrange
from torch import Tensor
from torch.distributions import (
    AffineTransform,
    Bernoulli,
    Categorical,
    Distribution,
    LogNormal,
    Normal,
    SigmoidTransform,
    TransformedDistribution,
    VonMises,
)

from bliss.errors import BlissConfigError
from bliss.posterior.distributions import TruncatedNormal, normal_icdf

__all__ = [
    "BernoulliFactor",
    "CountFactor",
    "Factor",
    "Gate",
    "LogNormalFactor",
    "LogitNormalFactor",
    "NormalFactor",
    "PositionAngleFactor",
    "TileLocationFactor",
    "TruncatedNormalFactor",
]


class Gate(StrEnum):
    """Which slots a factor's log-likelihood counts: every slot holding a source, or galaxies only."""

    SOURCE = "source"
    GALAXY = "galaxy"


class Factor:
    """Base class of per-source factors.

    Args:
        key: catalog key the factor models (e.g. ``"fluxes"``).
        dim: size ``d`` of that key's last dimension.
        gate: ``"source"`` or ``"galaxy"``.
        min_scale: floor added to every scale parameter.
    """

    params_per_dim = 2
    #: a value inside the support used in place of padding before ``log_prob``
    safe_value = 0.0

    def __init__(
        self, key: str, dim: int = 1, gate: str = "source", min_scale: float = 1e-3
    ) -> None:
        if dim < 1:
            raise BlissConfigError(f"factor for `{key}`: dim={dim}; expected an integer >= 1.")
        if min_scale < 0:
            raise BlissConfigError(f"factor for `{key}`: min_scale={min_scale}; expected >= 0.")
        try:
            self.gate = Gate(gate)
        except ValueError as err:
            raise BlissConfigError(
                f"factor for `{key}`: gate={gate!r}; expected one of {[g.value for g in Gate]}."
            ) from err
        self.key = key
        self.dim = dim
        self.min_scale = min_scale

    @property
    def n_params(self) -> int:
        """Raw parameters per slot."""
        return self.params_per_dim * self.dim

    def _loc_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        raw = rearrange(params, "... (d two) -> ... d two", two=2)
        return raw[..., 0], F.softplus(raw[..., 1]) + self.min_scale

    def distribution(self, params: Tensor) -> Distribution:
        """The distribution of each coordinate. Params ``... p`` -> batch shape ``... d``."""
        raise NotImplementedError  # abstract

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """Log density of ``value`` (``... d``) summed over ``d``. Returns ``...``."""
        return self.distribution(params).log_prob(value).sum(-1)

    def sample(self, params: Tensor) -> Tensor:
        """One draw per slot. Shape ``... d``."""
        return self.distribution(params).sample()

    def quantile(self, params: Tensor, q: float) -> Tensor:
        """The ``q`` quantile of each coordinate. Shape ``... d``."""
        return self.distribution(params).icdf(torch.full_like(params[..., : self.dim], q))

    def point_estimate(self, params: Tensor) -> Tensor:
        """The posterior median of each coordinate. Shape ``... d``."""
        return self.quantile(params, 0.5)


class NormalFactor(Factor):
    """Unbounded values (e.g. a redshift offset or a shear component): independent normals."""

    def distribution(self, params: Tensor) -> Distribution:
        """Normal with ``loc`` and ``scale`` per coordinate."""
        loc, scale = self._loc_scale(params)
        return Normal(loc, scale)

    def quantile(self, params: Tensor, q: float) -> Tensor:
        """Closed form ``loc + scale * Phi^-1(q)``."""
        loc, scale = self._loc_scale(params)
        return loc + scale * normal_icdf(q).to(loc)


class LogNormalFactor(Factor):
    """Positive values (fluxes in nanomaggies, radii in arcsec): log-normal per coordinate.

    The point estimate is the median ``exp(loc)``, not the mode ``exp(loc - scale^2)``, which is
    biased low.
    """

    safe_value = 1.0

    def distribution(self, params: Tensor) -> Distribution:
        """LogNormal with ``loc`` and ``scale`` of the log."""
        loc, scale = self._loc_scale(params)
        return LogNormal(loc, scale)

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """Log density, with values floored at 1e-12 to stay inside the support."""
        return self.distribution(params).log_prob(value.clamp(min=1e-12)).sum(-1)

    def quantile(self, params: Tensor, q: float) -> Tensor:
        """Closed form ``exp(loc + scale * Phi^-1(q))``."""
        loc, scale = self._loc_scale(params)
        return torch.exp(loc + scale * normal_icdf(q).to(loc))


class _BoundedFactor(Factor):
    """A factor for values in ``[low, high]``; the midpoint stands in for padding."""

    def __init__(
        self,
        key: str,
        dim: int = 1,
        gate: str = "source",
        min_scale: float = 1e-3,
        low: float = 0.0,
        high: float = 1.0,
    ) -> None:
        super().__init__(key, dim, gate, min_scale)
        if not low < high:
            raise BlissConfigError(
                f"factor for `{key}`: low={low}, high={high}; expected low < high."
            )
        self.low, self.high = float(low), float(high)
        self.safe_value = 0.5 * (low + high)


class LogitNormalFactor(_BoundedFactor):
    """Values bounded in ``(low, high)`` (axis ratios, disk fraction): logit-normal.

    Args:
        low: lower bound [default: 0].
        high: upper bound [default: 1].
    """

    _eps = 1e-4

    def distribution(self, params: Tensor) -> Distribution:
        """Sigmoid of a normal, scaled to ``(low, high)``."""
        loc, scale = self._loc_scale(params)
        transforms = [SigmoidTransform(), AffineTransform(self.low, self.high - self.low)]
        return TransformedDistribution(Normal(loc, scale), transforms)

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """Log density, with values kept a hair inside the bounds (q = 1 happens)."""
        width = self.high - self.low
        inside = value.clamp(self.low + self._eps * width, self.high - self._eps * width)
        return self.distribution(params).log_prob(inside).sum(-1)

    def quantile(self, params: Tensor, q: float) -> Tensor:
        """Closed form through the sigmoid."""
        loc, scale = self._loc_scale(params)
        return self.low + (self.high - self.low) * torch.sigmoid(
            loc + scale * normal_icdf(q).to(loc)
        )


class TruncatedNormalFactor(_BoundedFactor):
    """Values on a closed interval (location within the tile): truncated normal.

    The untruncated mean is ``low + (high - low) * sigmoid(raw)``, so it starts inside the bounds.
    """

    def distribution(self, params: Tensor) -> Distribution:
        """TruncatedNormal on ``[low, high]``."""
        raw, scale = self._loc_scale(params)
        loc = self.low + (self.high - self.low) * torch.sigmoid(raw)
        return TruncatedNormal(loc, scale, self.low, self.high)


class TileLocationFactor(TruncatedNormalFactor):
    """A source's location in its tile: fitted as a truncated normal, summarised as the normal.

    The truncation to the tile (and its margin) is the tiling's rule for which tile holds a source,
    not knowledge of where the source is: a faint source near a border is found by the
    neighbouring tile about as often as by its own, and then lies outside the tile that reports it.
    So the point estimate is the normal's centre (the truncated density's mode, always inside the
    bounds) and the quantiles are the normal's, so an interval may reach past the tile. Training
    (``log_prob``) and joint samples keep the truncation: every sampled source stays in its tile.
    """

    def quantile(self, params: Tensor, q: float) -> Tensor:
        """The ``q`` quantile of the normal before truncation. Shape ``... d``."""
        raw, scale = self._loc_scale(params)
        loc = self.low + (self.high - self.low) * torch.sigmoid(raw)
        return loc + scale * normal_icdf(q).to(loc)


class BernoulliFactor(Factor):
    """Binary values (star = 0 / galaxy = 1): one logit per coordinate."""

    params_per_dim = 1

    def distribution(self, params: Tensor) -> Distribution:
        """Bernoulli with the given logits."""
        return Bernoulli(logits=params)

    def probability(self, params: Tensor) -> Tensor:
        """``P(value = 1)``. Shape ``... d``."""
        return torch.sigmoid(params)

    def quantile(self, params: Tensor, q: float) -> Tensor:
        """Smallest value whose CDF reaches ``q``."""
        return (1 - self.probability(params) < q).to(params.dtype)

    def point_estimate(self, params: Tensor) -> Tensor:
        """1 where ``P(value = 1) > 0.5``."""
        return (self.probability(params) > 0.5).to(params.dtype)


class PositionAngleFactor(Factor):
    """A position angle with period ``period`` (pi for galaxy orientation): von Mises on the circle.

    The doubled angle ``2 pi beta / period`` follows a von Mises distribution whose mean direction
    comes from two raw outputs ``(a, b)`` as ``atan2(b, a)``, so the model has no seam at 0 / pi.
    Quantiles use the normal approximation ``1 / sqrt(kappa)`` around the mean direction.
    """

    params_per_dim = 3

    def __init__(
        self,
        key: str,
        dim: int = 1,
        gate: str = "galaxy",
        min_scale: float = 1e-3,
        period: float = math.pi,
    ) -> None:
        super().__init__(key, dim, gate, min_scale)
        self.period = float(period)

    def _direction_kappa(self, params: Tensor) -> tuple[Tensor, Tensor]:
        raw = rearrange(params, "... (d three) -> ... d three", three=3)
        direction = torch.atan2(raw[..., 1], raw[..., 0])
        kappa = F.softplus(raw[..., 2]) + self.min_scale
        return direction, kappa

    def distribution(self, params: Tensor) -> Distribution:
        """Von Mises on the doubled angle, in radians."""
        direction, kappa = self._direction_kappa(params)
        return VonMises(direction, kappa)

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """Density of the angle with period ``period`` (Jacobian of the doubling included)."""
        scale = 2 * math.pi / self.period
        angle = torch.remainder(value * scale + math.pi, 2 * math.pi) - math.pi
        return (self.distribution(params).log_prob(angle) + math.log(scale)).sum(-1)

    def sample(self, params: Tensor) -> Tensor:
        """One angle in ``[0, period)``."""
        return torch.remainder(
            self.distribution(params).sample() * self.period / (2 * math.pi), self.period
        )

    def quantile(self, params: Tensor, q: float) -> Tensor:
        """Approximate quantile (normal approximation), not wrapped, so intervals stay ordered."""
        direction, kappa = self._direction_kappa(params)
        point = torch.remainder(direction, 2 * math.pi)
        doubled = point + normal_icdf(q).to(point) / torch.sqrt(kappa)
        return doubled * self.period / (2 * math.pi)

    def point_estimate(self, params: Tensor) -> Tensor:
        """The mean direction, in ``[0, period)``."""
        direction, _ = self._direction_kappa(params)
        return torch.remainder(direction * self.period / (2 * math.pi), self.period)


class CountFactor:
    """Number of sources in a tile: Bernoulli for ``max_sources = 1``, categorical above.

    Detection is one decision: slot ``j`` is on when ``P(n_sources > j) > threshold``.

    Args:
        max_sources: ``m``.
    """

    key = "n_sources"

    def __init__(self, max_sources: int = 1) -> None:
        if max_sources < 1:
            raise BlissConfigError(f"CountFactor: max_sources={max_sources}; expected >= 1.")
        self.max_sources = max_sources

    @property
    def n_params(self) -> int:
        """Raw parameters per tile: 1 logit, or ``m + 1`` logits."""
        return 1 if self.max_sources == 1 else self.max_sources + 1

    def distribution(self, params: Tensor) -> Distribution:
        """Distribution over ``0 .. m``. Params ``b ht wt p`` -> batch shape ``b ht wt``."""
        if self.max_sources == 1:
            return Bernoulli(logits=params[..., 0])
        return Categorical(logits=params)

    def log_prob(self, params: Tensor, n_sources: Tensor) -> Tensor:
        """Log probability of the counts (``b ht wt``)."""
        return self.distribution(params).log_prob(
            n_sources.to(params.dtype if self.max_sources == 1 else torch.long)
        )

    def probabilities(self, params: Tensor) -> Tensor:
        """``P(n_sources = k)`` for ``k = 0 .. m``. Shape ``b ht wt (m+1)``."""
        if self.max_sources == 1:
            on = torch.sigmoid(params)
            return torch.cat([1 - on, on], dim=-1)
        return torch.softmax(params, dim=-1)

    def prob_at_least(self, params: Tensor) -> Tensor:
        """``P(n_sources > j)`` for slot ``j = 0 .. m-1``. Shape ``b ht wt m``."""
        probs = self.probabilities(params)
        tail = torch.flip(torch.cumsum(torch.flip(probs, dims=(-1,)), dim=-1), dims=(-1,))
        return tail[..., 1:]

    def sample(self, params: Tensor) -> Tensor:
        """Counts drawn from the posterior (``b ht wt``, long)."""
        return self.distribution(params).sample().long()

    def reweight(self, params: Tensor, log_prior_ratio: Tensor) -> Tensor:
        """The posterior under another count prior, the likelihood unchanged (Bayes' rule).

        ``log_prior_ratio`` is ``log P'(n) - log P(n)`` for ``n = 0 .. m`` (``b ht wt (m+1)``);
        a logit gains the ratio of its count (the Bernoulli logit the ratio of 1 to 0).
        """
        log_prior_ratio = log_prior_ratio.to(params)
        if self.max_sources == 1:
            return params + (log_prior_ratio[..., 1:] - log_prior_ratio[..., :1])
        return params + log_prior_ratio

    def point_estimate(self, params: Tensor, threshold: float = 0.5) -> Tensor:
        """Counts by thresholding ``P(n_sources > j)`` (``b ht wt``, long)."""
        return (self.prob_at_least(params) > threshold).sum(-1)
