"""Reading and writing shards: files of simulated images with their catalogs.

A shard is a ``torch.save`` file holding a dict of tensors: ``images`` (``n c h w``),
``background`` (``n c``), ``psf_fwhm_arcsec`` (``n c``), ``dither_px`` (``n c 2``), the tile catalog
under ``catalog/<key>`` (``n ht wt m d``, ``n_sources`` is ``n ht wt``), plus ``meta`` (shard
index, seed, tile_slen, bands). It is written to a temporary name and renamed, so a shard on
disk is always complete.
"""

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.serialization import config as serialization_config

from bliss.atomic import atomic_path
from bliss.catalog import TileCatalog
from bliss.catalog.batch import CATALOG_PREFIX
from bliss.errors import BlissIOError

__all__ = [
    "MANIFEST_NAME",
    "atomic_write_bytes",
    "catalog_from_shard",
    "load_shard",
    "read_manifest",
    "save_shard",
    "shard_path",
    "task_manifest_path",
]

MANIFEST_NAME = "manifest.json"
#: folder of the per-task manifests of a generation split over several jobs
TASKS_DIR = "tasks"
_REQUIRED = ("images", "background", "psf_fwhm_arcsec", "meta")


def shard_path(directory: Path, index: int) -> Path:
    """Where shard ``index`` lives."""
    return Path(directory) / f"shard_{index:06d}.pt"


def task_manifest_path(directory: Path, first: int, last: int) -> Path:
    """The manifest of the task that wrote shards ``first .. last`` (inclusive)."""
    return Path(directory) / TASKS_DIR / f"shards_{first:06d}-{last:06d}.json"


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it to ``path``.

    Raises:
        BlissIOError: the disk filled up; nothing was written at ``path``.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
    except (OSError, RuntimeError) as err:
        if not _out_of_space(err):
            raise
        free_mb = shutil.disk_usage(path.parent).free / 1e6
        raise BlissIOError(
            f"no space left on the device holding {path.parent} ({free_mb:.0f} MB free) while "
            f"writing {path.name}; nothing was written there. Free some space or point "
            "paths.cached_data at a larger disk, then re-run: complete shards are kept."
        ) from err


def _out_of_space(err: BaseException | None) -> bool:
    """Whether ``err`` or an exception it was raised from is ENOSPC (torch wraps it)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def save_shard(path: Path, batch: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write one shard atomically. ``batch`` is the output of ``ImageSimulator.simulate``."""
    payload: dict[str, Any] = {
        key: value.contiguous() for key, value in batch.items() if isinstance(value, Tensor)
    }
    catalog: TileCatalog = batch["catalog"]
    for key, value in catalog.items():
        payload[CATALOG_PREFIX + key] = value.contiguous()
    payload["meta"] = {**meta, "tile_slen": catalog.tile_slen}
    # torch.load never checks the zip's CRC-32s (a flipped byte loads silently, tested), so
    # computing them only cost time: ~0.35 ms per 256 px 5-band image
    with serialization_config.patch({"save.compute_crc32": False}):
        atomic_write_bytes(path, lambda stream: torch.save(payload, stream))


def load_shard(path: Path) -> dict[str, Any]:
    """Read a shard written by :func:`save_shard`.

    Raises:
        BlissIOError: the file is missing, truncated, or not a bliss shard.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise BlissIOError(
            f"shard {path} does not exist; re-run `bliss mode=generate` for this directory."
        ) from err
    except Exception as err:  # torch raises RuntimeError/EOFError/UnpicklingError on bad files
        raise BlissIOError(
            f"shard {path} is corrupt or truncated ({type(err).__name__}: {err}); delete it and "
            "re-run `bliss mode=generate` to regenerate it."
        ) from err
    missing = (
        [key for key in _REQUIRED if key not in payload] if isinstance(payload, dict) else _REQUIRED
    )
    if missing or not any(str(k).startswith(CATALOG_PREFIX) for k in payload):
        raise BlissIOError(
            f"{path} is not a bliss shard: it lacks {list(missing) or ['catalog/*']}; point "
            "paths.cached_data at a directory made by `bliss mode=generate`."
        )
    return payload


def catalog_from_shard(
    payload: dict[str, Any], index: slice | Tensor | int = slice(None)
) -> TileCatalog:
    """The tile catalog of some images of a loaded shard."""
    data = {
        key[len(CATALOG_PREFIX) :]: value[index]
        for key, value in payload.items()
        if key.startswith(CATALOG_PREFIX)
    }
    return TileCatalog(payload["meta"]["tile_slen"], data)


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read ``manifest.json`` of a shard directory.

    Raises:
        BlissIOError: no manifest, or it is not valid JSON.
    """
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        raise BlissIOError(
            f"{path} does not exist; generate shards first with "
            f"`bliss mode=generate paths.cached_data={directory}`."
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BlissIOError(
            f"{path} is not valid JSON ({err}); re-run `bliss mode=generate`."
        ) from err
