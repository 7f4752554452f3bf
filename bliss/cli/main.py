"""The ``bliss`` command: ``bliss mode=generate|simulate|train|predict|evaluate|download [overrides]``.

This package is the only code that reads the composed config: each mode's module turns its
sections into objects and plain arguments for the library.
"""

import importlib
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from bliss.errors import BlissConfigError, BlissError

__all__ = ["MODES", "cli", "report", "run"]


def _lazy(mode: str) -> Callable[[DictConfig], Any]:
    """``bliss.cli.<mode>.run_<mode>``, imported when the mode runs (heavy dependencies)."""

    def run_mode(cfg: DictConfig) -> Any:
        return getattr(importlib.import_module(f"bliss.cli.{mode}"), f"run_{mode}")(cfg)

    run_mode.__name__ = f"run_{mode}"
    return run_mode


#: mode -> the function that runs it
MODES: dict[str, Callable[[DictConfig], Any]] = {
    mode: _lazy(mode)
    for mode in ("generate", "simulate", "train", "predict", "evaluate", "download")
}


def run(cfg: DictConfig) -> Any:
    """Dispatch on ``cfg.mode``.

    Raises:
        BlissConfigError: ``mode`` is not one of :data:`MODES`.
    """
    if OmegaConf.is_missing(cfg, "mode"):
        raise BlissConfigError(
            f"mode is not set; expected one of {sorted(MODES)}, e.g. `bliss mode=predict`."
        )
    mode = cfg.mode
    if mode not in MODES:
        raise BlissConfigError(
            f"mode={mode!r} is not a bliss mode; expected one of {sorted(MODES)}, e.g. "
            "`bliss mode=generate`."
        )
    from bliss.cli.runs import link_latest

    link_latest(cfg)
    return MODES[mode](cfg)


def report(cfg: DictConfig) -> int:
    """Run ``cfg`` and turn its end into an exit status and at most one line on stderr.

    Returns:
        0 on success; 1 after a :class:`~bliss.errors.BlissError` (its message says what to
        fix); 130 (the shell's code for SIGINT) after Ctrl-C, which leaves nothing half-written.
    """
    try:
        run(cfg)
    except BlissError as err:
        print(f"bliss: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bliss: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _hydra_entry(cfg: DictConfig) -> None:
    status = report(cfg)
    if status:
        sys.exit(status)


def cli() -> None:
    """Console entry point."""
    _hydra_entry()


if __name__ == "__main__":
    cli()
