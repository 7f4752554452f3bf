"""The variational posterior over tile catalogs: one factor per catalog key."""

from bliss.posterior.factors import (
    BernoulliFactor,
    CountFactor,
    Factor,
    Gate,
    LogitNormalFactor,
    LogNormalFactor,
    NormalFactor,
    PositionAngleFactor,
    TileLocationFactor,
    TruncatedNormalFactor,
)
from bliss.posterior.variational import PriorShift, VariationalPosterior

__all__ = [
    "BernoulliFactor",
    "CountFactor",
    "Factor",
    "Gate",
    "LogNormalFactor",
    "LogitNormalFactor",
    "NormalFactor",
    "PositionAngleFactor",
    "PriorShift",
    "TileLocationFactor",
    "TruncatedNormalFactor",
    "VariationalPosterior",
]
