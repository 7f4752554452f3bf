"""Distributions that ``torch.distributions`` lacks, with quantiles."""

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

__all__ = ["TruncatedNormal", "normal_icdf"]

_SQRT2 = math.sqrt(2.0)


def normal_icdf(q: Tensor | float) -> Tensor:
    """Standard normal quantile function."""
    q = torch.as_tensor(q, dtype=torch.get_default_dtype())
    return _SQRT2 * torch.special.erfinv(2 * q - 1)


def _normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * (1 + torch.special.erf(z / _SQRT2))


class TruncatedNormal(Distribution):
    """A normal distribution with ``loc`` and ``scale`` restricted to ``[low, high]``.

    Sampling is by inverse CDF, so it is reparameterised (gradients flow to ``loc`` and ``scale``).

    Args:
        loc: mean of the untruncated normal.
        scale: standard deviation of the untruncated normal (> 0).
        low: lower bound.
        high: upper bound (> low).

    Example:
        >>> dist = TruncatedNormal(torch.tensor(0.5), torch.tensor(0.1), 0.0, 1.0)
        >>> round(float(dist.icdf(torch.tensor(0.5))), 4)
        0.5
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = True

    def __init__(
        self, loc: Tensor, scale: Tensor, low: float, high: float, validate_args: bool | None = None
    ) -> None:
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.low, self.high = float(low), float(high)
        self._alpha = (self.low - self.loc) / self.scale
        self._beta = (self.high - self.loc) / self.scale
        self._cdf_low = _normal_cdf(self._alpha)
        self._mass = (_normal_cdf(self._beta) - self._cdf_low).clamp(min=1e-12)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        """The interval ``[low, high]``."""
        return constraints.interval(self.low, self.high)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log density; ``-inf`` outside ``[low, high]``."""
        z = (value - self.loc) / self.scale
        log_density = (
            -0.5 * z**2
            - math.log(math.sqrt(2 * math.pi))
            - torch.log(self.scale)
            - torch.log(self._mass)
        )
        inside = (value >= self.low) & (value <= self.high)
        return torch.where(inside, log_density, -math.inf)

    def cdf(self, value: Tensor) -> Tensor:
        """Cumulative distribution function."""
        z = (value - self.loc) / self.scale
        return ((_normal_cdf(z) - self._cdf_low) / self._mass).clamp(0, 1)

    def icdf(self, value: Tensor) -> Tensor:
        """Quantile function."""
        p = self._cdf_low + value * self._mass
        p = p.clamp(1e-7, 1 - 1e-7)
        return (self.loc + self.scale * normal_icdf(p)).clamp(self.low, self.high)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        """Reparameterised draw by inverse CDF."""
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.icdf(u)

    @property
    def mode(self) -> Tensor:
        """The most probable value: ``loc`` clamped to the bounds."""
        return self.loc.clamp(self.low, self.high)

    @property
    def mean(self) -> Tensor:
        """Mean of the truncated distribution."""
        pdf = lambda z: torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)  # noqa: E731
        return self.loc + self.scale * (pdf(self._alpha) - pdf(self._beta)) / self._mass
