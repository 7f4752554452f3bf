"""Merge the task manifests of a generation split over several jobs (a SLURM array).

Each task (``bliss mode=generate generate.total_shards=T generate.shard_offset=O
generate.n_shards=N``) writes its shards and ``tasks/shards_<O>-<O+N-1>.json``. Once all have
finished, ``bliss mode=generate generate.merge_only=true`` checks that every shard ``0 .. T-1`` is
present and complete and that every task used one config, then writes ``manifest.json`` (equal to
the one a single run of ``T`` shards writes) and ``splits.json``.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bliss.data.cached import assign_splits
from bliss.data.generate import write_manifest
from bliss.data.integrity import shard_problem
from bliss.data.shards import TASKS_DIR
from bliss.errors import BlissConfigError, BlissIOError

__all__ = ["merge_task_manifests"]


def _ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts: list[str] = []
    start = previous = None
    for index in [*sorted(indices), None]:
        if start is not None and index == previous + 1:
            previous = index
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = index
    return ", ".join(parts)


def _read_tasks(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    paths = sorted((directory / TASKS_DIR).glob("shards_*.json"))
    if not paths:
        raise BlissIOError(
            f"{directory / TASKS_DIR} holds no task manifests; run the array tasks first "
            "(`bliss mode=generate generate.total_shards=T generate.shard_offset=... "
            "generate.n_shards=...`) with the same paths.cached_data."
        )
    tasks = []
    for path in paths:
        try:
            tasks.append((path, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError) as err:
            raise BlissIOError(
                f"task manifest {path} cannot be read ({err}); re-run that task."
            ) from err
    return tasks


def _one_value(tasks: list[tuple[Path, dict[str, Any]]], key: str, what: str) -> Any:
    """The value of ``key`` shared by every task manifest, or an error naming each group."""
    groups: dict[str, list[str]] = {}
    for path, manifest in tasks:
        groups.setdefault(str(manifest.get(key)), []).append(path.name)
    if len(groups) > 1:
        listing = "; ".join(f"{value}: {', '.join(names)}" for value, names in groups.items())
        raise BlissConfigError(
            f"the array tasks used different {what} ({key} {listing}); re-run the odd tasks with "
            "the config of the others, or write each config to its own paths.cached_data."
        )
    return tasks[0][1].get(key)


def merge_task_manifests(
    directory: str | Path,
    *,
    split_fractions: Mapping[str, float],
    total_shards: int | None = None,
) -> dict[str, Any]:
    """Check the shards written by array tasks and write ``manifest.json`` and ``splits.json``.

    Args:
        directory: the shard directory (``paths.cached_data``) the tasks wrote into.
        split_fractions: ``{val, test}`` fractions for ``splits.json`` (``data.split_fractions``).
        total_shards: shards the generation must hold [default: what the task manifests record].

    Returns:
        The manifest that was written.

    Raises:
        BlissConfigError: the tasks used different configs (fingerprints) or totals, or
            ``total_shards`` differs from theirs.
        BlissIOError: no task manifest; a shard of ``0 .. total_shards - 1`` is missing, has no
            sidecar, was made with another config, or its size or CRC-32 differ from its task's
            record.
    """
    directory = Path(directory)
    tasks = _read_tasks(directory)
    fingerprint = _one_value(tasks, "fingerprint", "simulator configs")
    recorded_total = int(_one_value(tasks, "total_shards", "generate.total_shards"))
    if total_shards is not None and total_shards != recorded_total:
        raise BlissConfigError(
            f"generate.total_shards={total_shards} but the task manifests in {directory} were "
            f"written for {recorded_total} shards; drop the override or give {recorded_total}."
        )
    entries: dict[int, dict[str, Any]] = {}
    for _, manifest in tasks:
        for entry in manifest["shards"]:
            entries[int(entry["index"])] = entry
    missing = [i for i in range(recorded_total) if i not in entries]
    broken = []
    for index in range(recorded_total):
        entry = entries.get(index)
        if entry is None:
            continue
        shard_file = directory / entry["file"]
        sidecar = shard_file.with_suffix(".json")
        if not (shard_file.exists() and sidecar.exists()):
            broken.append(f"{shard_file.name} (file or .json sidecar missing)")
        elif (problem := shard_problem(shard_file, entry)) is not None:
            broken.append(f"{shard_file.name} ({problem})")
        elif json.loads(sidecar.read_text()).get("fingerprint") != fingerprint:
            broken.append(f"{shard_file.name} (made with another config)")
    if missing or broken:
        problems = []
        if missing:
            problems.append(f"no task wrote shards {_ranges(missing)}")
        if broken:
            problems.append(f"incomplete shards: {'; '.join(broken[:10])}")
            if len(broken) > 10:
                problems.append(f"... {len(broken) - 10} more")
        raise BlissIOError(
            f"{directory} does not hold all {recorded_total} shards: {'; '.join(problems)}. "
            "Delete the incomplete shards and re-run the tasks of those ranges "
            "(complete shards are kept), then merge again."
        )
    shards = [entries[index] for index in range(recorded_total)]
    # splits first: they validate split_fractions against the shard count before any write
    assign_splits(directory, [s["file"] for s in shards], split_fractions)
    return write_manifest(directory, tasks[0][1]["config"], fingerprint, shards)
