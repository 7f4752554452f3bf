"""Self-describing checkpoints: every checkpoint carries the config that built its encoder.

Checkpoints are verified before they are unpickled (:func:`verify_checkpoint_file`): the CRC-32
of every record of torch's zip format (``torch.load`` never checks them), and, where a
``<file>.sha256`` sidecar exists (the shipped models; :func:`export_checkpoint` writes one), the
SHA-256 of the whole file.
"""

import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bliss.errors import BlissConfigError, BlissIOError

__all__ = [
    "check_compatible",
    "checkpoint_hash",
    "export_checkpoint",
    "load_encoder",
    "read_checkpoint",
    "require_checkpoint_file",
    "verify_checkpoint_file",
    "write_checksum_sidecar",
]

CONFIG_KEY = "bliss_config"
_ZIP_MAGIC = b"PK\x03\x04"
_BLOCK = 1 << 23


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def verify_checkpoint_file(path: str | Path) -> None:
    """Check a checkpoint's bytes before they are unpickled.

    Args:
        path: a checkpoint file.

    Raises:
        BlissIOError: the SHA-256 differs from its ``.sha256`` sidecar, a zip record's CRC-32
            does not match its bytes, or the zip is cut short.
    """
    path = Path(path)
    sidecar = _sidecar(path)
    if sidecar.is_file():
        recorded = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
        actual = _sha256(path)
        if actual != recorded:
            raise BlissIOError(
                f"checkpoint {path} is damaged: its SHA-256 is {actual[:16]}..., {sidecar.name} "
                f"records {recorded[:16]}...; restore the file (a shipped model: `pip install "
                "--force-reinstall bliss` or `git checkout bliss/models`), or use another."
            )
    with open(path, "rb") as stream:
        zipped = stream.read(4) == _ZIP_MAGIC
    if not zipped:  # torch's legacy format has no checksums of its own
        return
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                # torch can be told to skip CRCs (bliss shards do): 0 then means "not computed"
                if info.CRC == 0 and info.file_size:
                    continue
                with archive.open(info) as record:
                    while record.read(_BLOCK):
                        pass
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise BlissIOError(
            f"checkpoint {path} is damaged ({err}): its bytes are not the ones torch wrote. Use "
            "another checkpoint (e.g. an earlier one of the run) or restore this one."
        ) from err


def require_checkpoint_file(path: str | Path, key: str | None = None) -> None:
    """Raise unless ``path`` is a file; ``key`` names the setting that gave it.

    Raises:
        BlissIOError: the checkpoint does not exist.
    """
    if not Path(path).is_file():
        where = f"{key}={path}" if key else f"checkpoint {path}"
        check = key or "predict.checkpoint / train.resume"
        raise BlissIOError(f"{where} does not exist; check {check}.")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Verify (:func:`verify_checkpoint_file`), then load a checkpoint file on the CPU.

    Raises:
        BlissIOError: missing, damaged, unreadable, or not written by bliss (no
            ``bliss_config``).
    """
    path = Path(path)
    require_checkpoint_file(path)
    verify_checkpoint_file(path)
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
    saved_spill = saved.get("context_spill_fwhm_px")
    wanted_spill = wanted.get("context_spill_fwhm_px")
    # None -> a width is a fine-tune that adds the channels (zero weights); a width -> another
    # loads weights learnt for light drawn with the first width into channels drawn with the second
    if saved_spill is not None and wanted_spill != saved_spill:
        raise BlissConfigError(
            f"checkpoint {path} was trained with the context's light channels "
            f"(encoder.context_spill_fwhm_px={saved_spill}), the config has "
            f"{'none' if wanted_spill is None else wanted_spill}; set "
            f"encoder.context_spill_fwhm_px={saved_spill} to train from it."
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
    return _sha256(Path(path))[:16]


def export_checkpoint(
    source: str | Path, destination: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write a small inference-only copy of a training checkpoint (weights + config, no optimizer).

    Floating-point weights are stored as float16 (half the size; relative rounding 5e-4, far
    below the posterior widths); :func:`load_encoder` casts them back to float32. A
    ``<destination>.sha256`` sidecar (``sha256sum -c`` reads it) records the file's hash, which
    :func:`read_checkpoint` compares before every use.

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
    destination = Path(destination)
    with atomic_path(destination) as tmp:
        torch.save(small, tmp)
    write_checksum_sidecar(destination)
    return destination


def write_checksum_sidecar(path: str | Path) -> Path:
    """Write ``<path>.sha256`` in ``sha256sum`` format; returns the sidecar."""
    from bliss.atomic import atomic_path

    path = Path(path)
    with atomic_path(_sidecar(path)) as tmp:
        tmp.write_text(f"{_sha256(path)}  {path.name}\n")
    return _sidecar(path)
