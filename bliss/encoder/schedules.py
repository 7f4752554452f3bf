"""Learning-rate schedules built from the config, with the lengths they cannot handle fixed.

``torch.optim.lr_scheduler.OneCycleLR`` divides by its warm-up length minus one step, so a
warm-up of exactly one step (``pct_start * total_steps == 1``, e.g. 0.05 x 20) raises
``ZeroDivisionError`` when it is built. :func:`build_scheduler` gives such a schedule a two-step
warm-up instead (and warns); every other length is left as configured.
"""

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from bliss.errors import BlissConfigError, BlissWarning

__all__ = ["build_scheduler"]


def build_scheduler(factory: Callable[..., Any], optimizer: torch.optim.Optimizer) -> Any:
    """Call ``factory(optimizer)`` (a Hydra ``_partial_``), first fixing a one-step warm-up.

    Args:
        factory: the configured scheduler, e.g. ``functools.partial(OneCycleLR, max_lr=...,
            total_steps=..., pct_start=...)``.
        optimizer: the optimizer it schedules.

    Returns:
        The scheduler.

    Raises:
        BlissConfigError: the scheduler still cannot be built from the configured lengths.
    """
    keywords = dict(getattr(factory, "keywords", {}) or {})
    total, pct = keywords.get("total_steps"), keywords.get("pct_start")
    if isinstance(total, int) and isinstance(pct, int | float) and math.isclose(pct * total, 1.0):
        fixed = 2.0 / total if total > 2 else 0.0
        warnings.warn(
            f"encoder.scheduler.pct_start={pct} x trainer.max_steps={total} is a one-step "
            f"warm-up, which OneCycleLR cannot schedule; using pct_start={fixed:g} "
            f"({round(fixed * total)} steps).",
            BlissWarning,
            stacklevel=2,
        )
        return factory(optimizer, pct_start=fixed)
    try:
        return factory(optimizer)
    except (ZeroDivisionError, ValueError) as err:
        raise BlissConfigError(
            f"the learning-rate schedule cannot be built ({type(err).__name__}: {err}) from "
            f"{keywords}; check encoder.scheduler and trainer.max_steps."
        ) from err
