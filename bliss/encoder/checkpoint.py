"""Self-describing checkpoints: every checkpoint carries the config that built its encoder."""

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bliss.errors import BlissConfigError, BlissIOError

__all__ = [
    "RecordConfig",
    "check_compatible",
    "checkpoint_hash",
    "export_checkpoint",
    "load_encoder",
    "read_checkpoint",
]

CONFIG_KEY = "bliss_config"


class RecordConfig(pl.Callback):
    """Store the composed run config in every checkpoint under ``bliss_config``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Add the config to the checkpoint dict."""
        checkpoint[CONFIG_KEY] = self.config


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file on the CPU.

    Raises:
        BlissIOError: missing, unreadable, or not written by bliss (no ``bliss_config``).
    """
    path = Path(path)
    if not path.is_file():
        raise BlissIOError(
            f"checkpoint {path} does not exist; check predict.checkpoint / train.resume."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise BlissIOError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {err})."
        ) from err
    if (
        not isinstance(checkpoint, dict)
        or CONFIG_KEY not in checkpoint
        or "state_dict" not in checkpoint
    ):
        raise BlissIOError(
            f"{path} is not a bliss checkpoint (no `{CONFIG_KEY}` or `state_dict`); use one written "
            "by `bliss mode=train`."
        )
    return checkpoint


def check_compatible(
    checkpoint_config: dict[str, Any], encoder_config: Mapping[str, Any], path: str | Path
) -> None:
    """Raise if a checkpoint's bands or posterior factors differ from the configured encoder.

    Args:
        checkpoint_config: the config recorded in the checkpoint.
        encoder_config: the ``encoder`` section of the run's config, resolved to plain types.
        path: the checkpoint, for the message.
    """
    saved = checkpoint_config["encoder"]
    wanted = encoder_config
    saved_factors = sorted(saved["posterior"]["factors"])
    wanted_factors = sorted(wanted["posterior"]["factors"])
    if saved_factors != wanted_factors:
        raise BlissConfigError(
            f"checkpoint {path} has posterior factors {saved_factors}, the config asks for "
            f"{wanted_factors}; resume with the factor set it was trained with."
        )
    if list(saved["bands"]) != list(wanted["bands"]):
        raise BlissConfigError(
            f"checkpoint {path} was trained on bands {saved['bands']}, the config has "
            f"{wanted['bands']}; use a checkpoint for these bands or change survey."
        )


def load_encoder(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """Rebuild an encoder from a bliss checkpoint.

    Returns:
        The encoder in eval mode and the config recorded in the checkpoint.
    """
    checkpoint = read_checkpoint(path)
    config = checkpoint[CONFIG_KEY]
    encoder = instantiate(OmegaConf.create(config["encoder"]))
    encoder.load_state_dict(checkpoint["state_dict"])
    return encoder.to(map_location).eval(), config


def checkpoint_hash(path: str | Path) -> str:
    """SHA-256 of a checkpoint file (first 16 hex digits), recorded in outputs."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def export_checkpoint(
    source: str | Path, destination: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write a small inference-only copy of a training checkpoint (weights + config, no optimizer).

    Floating-point weights are stored as float16 (half the size; relative rounding 5e-4, far
    below the posterior widths); :func:`load_encoder` casts them back to float32.

    Args:
        source: a checkpoint written by ``bliss mode=train``.
        destination: where to write the copy.
        extra: more entries to record (e.g. validation metrics, the command that trained it).
    """
    from bliss.atomic import atomic_path

    checkpoint = read_checkpoint(source)
    encoder, _ = load_encoder(source)  # the canonical weights of the architecture, nothing else
    weights = encoder.state_dict()
    small = {
        "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
        CONFIG_KEY: checkpoint[CONFIG_KEY],
        "global_step": checkpoint.get("global_step"),
        "pytorch-lightning_version": checkpoint.get("pytorch-lightning_version"),
        **(extra or {}),
    }
    with atomic_path(destination) as tmp:
        torch.save(small, tmp)
    return Path(destination)
