"""The ``bliss`` command: ``bliss mode=generate|simulate|train|predict|evaluate|download [overrides]``.

This package is the only code that reads the composed config: each mode's module turns its
sections into objects and plain arguments for the library.
"""

import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from bliss.errors import BlissConfigError, BlissError

__all__ = ["MODES", "cli", "report", "run"]


def _generate(cfg: DictConfig) -> Any:
    from bliss.cli.generate import run_generate

    return run_generate(cfg)


def _simulate(cfg: DictConfig) -> Any:
    from bliss.cli.simulate import run_simulate

    return run_simulate(cfg)


def _train(cfg: DictConfig) -> Any:
    from bliss.cli.train import run_train

    return run_train(cfg)


def _predict(cfg: DictConfig) -> Any:
    from bliss.cli.predict import run_predict

    return run_predict(cfg)


def _evaluate(cfg: DictConfig) -> Any:
    from bliss.cli.evaluate import run_evaluate

    return run_evaluate(cfg)


def _download(cfg: DictConfig) -> Any:
    from bliss.cli.download import run_download

    return run_download(cfg)


#: mode -> the function that runs it (each imports its own, heavy, dependencies)
MODES: dict[str, Callable[[DictConfig], Any]] = {
    "generate": _generate,
    "simulate": _simulate,
    "train": _train,
    "predict": _predict,
    "evaluate": _evaluate,
    "download": _download,
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
