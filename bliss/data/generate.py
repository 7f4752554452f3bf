"""``bliss mode=generate``: simulate shards in parallel, resumably, and write a manifest."""

import hashlib
import json
import logging
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bliss.atomic import remove_stale_temporaries
from bliss.data.integrity import shard_problem
from bliss.data.shards import (
    MANIFEST_NAME,
    atomic_write_bytes,
    save_shard,
    shard_path,
    task_manifest_path,
)
from bliss.errors import BlissConfigError, BlissIOError
from bliss.simulator.simulate import ImageSimulator

__all__ = ["config_fingerprint", "generate_shards", "shard_seed", "write_manifest"]

_SIMULATOR: ImageSimulator | None = None
_log = logging.getLogger(__name__)


def shard_seed(seed: int, index: int) -> int:
    """The seed of shard ``index``: independent streams for every (seed, index) pair."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def config_fingerprint(recipe: dict[str, Any]) -> str:
    """A short hash of everything that determines a shard's content."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _init_worker(simulator: ImageSimulator) -> None:
    global _SIMULATOR  # one simulator per worker process, built once
    _SIMULATOR = simulator
    # Ctrl-C is the parent's to handle (it stops handing out shards); a worker finishes its
    # shard, written atomically, instead of printing its own traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # one thread per process: a shard is many small tensor ops, whose intra-op threads cost more
    # than they save, and stall at every op when other jobs share the cores (4x slower measured)
    torch.set_num_threads(1)


def _make_shard(job: tuple[Path, int, int, int, str]) -> int:
    path, index, seed, n_images, fingerprint = job
    if _SIMULATOR is None:
        raise BlissConfigError("generate worker started without a simulator (bliss bug).")
    batch = _SIMULATOR.simulate(n_images, seed=seed)
    meta = {
        "index": index,
        "seed": seed,
        "n_images": n_images,
        "fingerprint": fingerprint,
        "bands": list(_SIMULATOR.survey.bands),
    }
    meta.update(save_shard(path, batch, meta))  # + bytes and crc32 of the file written
    payload = json.dumps(meta).encode()
    atomic_write_bytes(_sidecar(path), lambda stream: stream.write(payload))
    return index


def _is_complete(path: Path, fingerprint: str) -> bool:
    """Whether shard ``path`` exists as written: sidecar present, same size and checksum.

    A damaged shard (truncated, bytes changed, unreadable sidecar) is deleted with its sidecar
    and reported, so that it is generated again.
    """
    sidecar = _sidecar(path)
    if not (path.exists() and sidecar.exists()):
        return False
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        meta, problem = {}, "its .json sidecar is unreadable"
    else:
        if meta.get("fingerprint") != fingerprint:
            raise BlissIOError(
                f"{path} was made with a different simulator config (fingerprint "
                f"{meta.get('fingerprint')} != {fingerprint}); write to another "
                "paths.cached_data or delete the old shards."
            )
        problem = shard_problem(path, meta)
    if problem is None:
        return True
    _log.warning("%s is damaged (%s): generating it again", path.name, problem)
    sidecar.unlink(missing_ok=True)  # first: a shard without sidecar is never counted
    path.unlink(missing_ok=True)
    return False


def generate_shards(
    simulator: ImageSimulator,
    directory: Path,
    *,
    seed: int,
    n_shards: int,
    images_per_shard: int,
    shard_offset: int = 0,
    total_shards: int | None = None,
    num_workers: int = 0,
    recipe: dict[str, Any],
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write shards ``shard_offset .. shard_offset + n_shards - 1`` and refresh the manifest.

    Complete shards (shard file and its ``.json`` sidecar present, same config fingerprint, the
    size and CRC-32 the sidecar records) are skipped, so an interrupted run resumes where it
    stopped; damaged ones are generated again.

    With ``total_shards`` set, this run is one task of a generation split over several jobs (a
    SLURM array): it writes only the task manifest of its range,
    ``tasks/shards_<first>-<last>.json``, and leaves ``manifest.json`` to
    :func:`bliss.data.merge.merge_task_manifests`, run once every task has finished.

    Args:
        simulator: what draws the images.
        directory: the shard directory (``paths.cached_data``).
        seed: the run seed; shard ``i`` uses :func:`shard_seed` ``(seed, i)``.
        n_shards: how many shards this run is responsible for.
        images_per_shard: images in each shard.
        shard_offset: index of the first shard (SLURM arrays split one generation this way).
        total_shards: shards of the whole generation when this run is one task of several
            [default: None, this run is the whole generation].
        num_workers: worker processes; 0 simulates in this process. Either way each process
            simulates on one thread (torch's thread count is set back afterwards).
        recipe: the composed config of everything that determines shard content (recorded).
        progress: show a progress bar.
        on_shard: called with each finished shard index (used by tests to simulate crashes).

    Returns:
        The manifest that was written.
    """
    for key, value, low in (
        ("n_shards", n_shards, 1),
        ("images_per_shard", images_per_shard, 1),
        ("shard_offset", shard_offset, 0),
        ("num_workers", num_workers, 0),
    ):
        if value < low:
            raise BlissConfigError(f"generate.{key}={value}; expected an integer >= {low}.")
    if total_shards is not None and shard_offset + n_shards > total_shards:
        raise BlissConfigError(
            f"generate.shard_offset={shard_offset} + generate.n_shards={n_shards} runs past "
            f"generate.total_shards={total_shards}; give each task a range inside 0..{total_shards - 1}."
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory)  # shards of killed runs never became complete
    fingerprint = config_fingerprint({**recipe, "images_per_shard": images_per_shard, "seed": seed})
    jobs = []
    for index in range(shard_offset, shard_offset + n_shards):
        path = shard_path(directory, index)
        if not _is_complete(path, fingerprint):
            jobs.append((path, index, shard_seed(seed, index), images_per_shard, fingerprint))
    bar = tqdm(
        total=n_shards,
        initial=n_shards - len(jobs),
        desc="generate",
        unit="shard",
        disable=not progress,
    )
    if num_workers == 0:
        threads = torch.get_num_threads()  # the caller's: set back when done
        try:
            _init_worker(simulator)
            for index in map(_make_shard, jobs):
                bar.update()
                if on_shard:
                    on_shard(index)
        finally:
            torch.set_num_threads(threads)
    else:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(
            num_workers, mp_context=context, initializer=_init_worker, initargs=(simulator,)
        ) as pool:
            for index in pool.map(_make_shard, jobs):
                bar.update()
                if on_shard:
                    on_shard(index)
    bar.close()
    if total_shards is None:
        return write_manifest(directory, recipe, fingerprint)
    return _write_task_manifest(
        directory, recipe, fingerprint, range(shard_offset, shard_offset + n_shards), total_shards
    )


def _shard_entry(sidecar: Path) -> dict[str, Any] | None:
    """The manifest entry of one shard, or None when the shard file is absent."""
    meta = json.loads(sidecar.read_text())
    shard_file = sidecar.with_suffix(".pt")
    if not shard_file.exists():
        return None
    # the size written (sidecar), not the size now: a truncated file then fails its checks
    return {"file": shard_file.name, **meta, "bytes": meta.get("bytes", shard_file.stat().st_size)}


def write_manifest(
    directory: Path,
    recipe: dict[str, Any],
    fingerprint: str,
    shards: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``manifest.json``: ``shards`` [default: every complete shard in ``directory``]."""
    if shards is None:
        shards = []
        for sidecar in sorted(Path(directory).glob("shard_*.json")):
            entry = _shard_entry(sidecar)
            if entry is None or entry.get("fingerprint") != fingerprint:
                continue
            # shards outside this run's range were not checksummed: sizes at least
            problem = shard_problem(sidecar.with_suffix(".pt"), entry, checksum=False)
            if problem is not None:
                _log.warning("%s left out of the manifest: %s", entry["file"], problem)
                continue
            shards.append(entry)
    manifest = {
        "fingerprint": fingerprint,
        "n_shards": len(shards),
        "n_images": sum(s["n_images"] for s in shards),
        "config": recipe,
        "shards": shards,
    }
    payload = json.dumps(manifest, indent=1).encode()
    atomic_write_bytes(Path(directory) / MANIFEST_NAME, lambda stream: stream.write(payload))
    return manifest


def _write_task_manifest(
    directory: Path, recipe: dict[str, Any], fingerprint: str, indices: range, total_shards: int
) -> dict[str, Any]:
    """Write the manifest of one task's shard range (all of them complete by now)."""
    shards = []
    for index in indices:
        entry = _shard_entry(_sidecar(shard_path(directory, index)))
        if entry is None:  # generate_shards wrote or checked every shard of the range
            raise BlissIOError(f"shard {index} vanished from {directory} while this task ran.")
        shards.append(entry)
    manifest = {
        "fingerprint": fingerprint,
        "first_shard": indices.start,
        "n_shards": len(shards),
        "total_shards": total_shards,
        "n_images": sum(s["n_images"] for s in shards),
        "config": recipe,
        "shards": shards,
    }
    payload = json.dumps(manifest, indent=1).encode()
    path = task_manifest_path(directory, indices.start, indices.stop - 1)
    atomic_write_bytes(path, lambda stream: stream.write(payload))
    return manifest
