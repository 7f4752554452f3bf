"""Reading and writing shards: files of simulated images with their catalogs.

A shard is a ``torch.save`` file holding a dict of tensors: ``images`` (``n c h w``),
``background`` (``n c``), ``psf_fwhm_arcsec`` (``n c``), ``dither_px`` (``n c 2``), the tile catalog
under ``catalog/<key>`` (``n ht wt m d``, ``n_sources`` is ``n ht wt``), plus ``meta`` (shard
index, seed, tile_slen, bands). It is written to a temporary name and renamed, so a shard on
disk is always complete; its size and CRC-32 go into its sidecar and the manifest, and
:func:`load_shard` compares them (see :mod:`bliss.data.integrity`).
"""

import errno
import io
import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.serialization import config as serialization_config

from bliss.atomic import atomic_path
from bliss.catalog import TileCatalog
from bliss.catalog.batch import CATALOG_PREFIX
from bliss.data.integrity import check_shard_content, file_crc32, shard_problem
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


def save_shard(path: Path, batch: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Write one shard atomically. ``batch`` is the output of ``ImageSimulator.simulate``.

    Returns:
        ``bytes`` and ``crc32`` of the file written, for its sidecar.

    Raises:
        BlissValueError: the simulated batch has non-finite pixels or catalog values outside
            the prior's support (a simulator bug: nothing is written).
    """
    payload: dict[str, Any] = {
        key: value.contiguous() for key, value in batch.items() if isinstance(value, Tensor)
    }
    catalog: TileCatalog = batch["catalog"]
    for key, value in catalog.items():
        payload[CATALOG_PREFIX + key] = value.contiguous()
    payload["meta"] = {**meta, "tile_slen": catalog.tile_slen}
    check_shard_content(payload, Path(path).name)
    # torch.load never checks the zip's CRC-32s, so bliss keeps its own of the whole file (in
    # the sidecar) and the zip's per-record ones only cost time: ~0.35 ms per 256 px image
    with serialization_config.patch({"save.compute_crc32": False}):
        atomic_write_bytes(path, lambda stream: torch.save(payload, stream))
    # read back, not computed while writing: the checksum is of the bytes that reached the file
    return {"bytes": Path(path).stat().st_size, "crc32": file_crc32(path)}


def load_shard(
    path: Path, record: dict[str, Any] | None = None, check: bool = True
) -> dict[str, Any]:
    """Read a shard written by :func:`save_shard`.

    Args:
        path: the shard file.
        record: its manifest entry or sidecar; its ``bytes`` and ``crc32`` are compared with
            the file's before it is unpickled [default: no comparison].
        check: refuse non-finite pixels and catalog values outside the prior's support
            (:func:`bliss.data.integrity.check_shard_content`).

    Raises:
        BlissIOError: the file is missing, truncated, damaged (size or checksum differ from
            ``record``), or not a bliss shard.
        BlissValueError: its content is outside the prior's support (with ``check``).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise BlissIOError(
            f"shard {path} does not exist; re-run `bliss mode=generate` for this directory."
        ) from err
    if record is not None:
        crc = f"{zlib.crc32(data):08x}"
        expected_bytes, expected_crc = record.get("bytes"), record.get("crc32")
        if (expected_bytes is not None and len(data) != int(expected_bytes)) or (
            expected_crc is not None and crc != expected_crc
        ):
            # the same comparison as the pre-flight pass, with its message
            problem = shard_problem(path, record) or "changed while being read"
            raise BlissIOError(
                f"shard {path} is damaged ({problem}); re-run the same `bliss mode=generate` "
                "command: it regenerates damaged shards and keeps the others."
            )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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
    if check:
        check_shard_content(payload, str(path))
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
