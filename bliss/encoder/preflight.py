"""Checks before any training step: settings, the data's recipe, a resumed checkpoint's config.

Each check takes plain values (the cli layer reads them from the config) and raises one
:class:`~bliss.errors.BlissConfigError` naming every offending key with the value received and
the value expected, before a DataLoader, a trainer or a scheduler is built.
"""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bliss.errors import BlissConfigError

__all__ = [
    "check_enough_images",
    "check_resumable",
    "check_shards_fit",
    "check_training_settings",
    "config_differences",
]

#: keys that say where or on what a shard was made, not what it holds
_NOT_RECIPE = {"device", "data_dir"}
#: encoder keys a resumed run may change: inference and speed settings, the schedule's length
_RESUMABLE = {
    "threshold",
    "match_dist_px",
    "mag_bins",
    "compile_features",
    "channels_last",
    "features.checkpoint_stem",
    "scheduler.total_steps",
}


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
) -> list[tuple[str, Any, Any]]:
    """The dotted keys whose values differ between two nested mappings.

    Keys present in only one of them are not compared: a key added by a newer bliss, with a
    default that keeps the old behaviour, is not a difference.

    Returns:
        ``(key, old value, new value)`` for each difference, in key order.
    """
    found = []
    for key in sorted(set(old) & set(new), key=str):
        name = f"{prefix}{key}"
        if isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            found += config_differences(old[key], new[key], f"{name}.")
        elif _plain(old[key]) != _plain(new[key]):
            found.append((name, old[key], new[key]))
    return found


def _plain(value: Any) -> Any:
    """Lists and tuples compare equal (a checkpoint's YAML and a JSON manifest keep lists)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _listing(differences: Sequence[tuple[str, Any, Any]], old: str, new: str) -> str:
    return "; ".join(f"{key} ({old} {a!r}, {new} {b!r})" for key, a, b in differences)


def check_training_settings(
    *,
    batch_size: Any,
    max_steps: Any,
    max_epochs: Any,
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any] | None,
    every_n_train_steps: Any = None,
) -> None:
    """Refuse settings that torch or Lightning would reject only after work has started.

    Args:
        batch_size: ``data.batch_size``.
        max_steps: ``trainer.max_steps`` (-1: bounded by ``max_epochs``).
        max_epochs: ``trainer.max_epochs``.
        optimizer: ``encoder.optimizer`` (``lr``, ``weight_decay``, ...).
        scheduler: ``encoder.scheduler`` or None.
        every_n_train_steps: ``callbacks.checkpoint.every_n_train_steps``.

    Raises:
        BlissConfigError: every invalid setting, in one message.
    """
    problems = []

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not integer(batch_size) or batch_size < 1:
        problems.append(f"data.batch_size={batch_size!r}; expected an integer >= 1")
    unbounded = max_steps == -1 and integer(max_epochs) and max_epochs >= 1
    if not integer(max_steps) or (max_steps < 1 and not unbounded):
        problems.append(
            f"trainer.max_steps={max_steps!r}; expected an integer >= 1 (or -1 with "
            "trainer.max_epochs >= 1)"
        )
    for key in ("lr", "weight_decay"):
        value = optimizer.get(key)
        if value is None:
            continue
        low_ok = value > 0 if key == "lr" else value >= 0
        if not isinstance(value, int | float) or not math.isfinite(value) or not low_ok:
            wanted = "> 0, e.g. 2e-3" if key == "lr" else ">= 0"
            problems.append(f"encoder.optimizer.{key}={value!r}; expected a finite number {wanted}")
    if scheduler:
        total = scheduler.get("total_steps")
        if total is not None and (not integer(total) or total < 1):
            problems.append(
                f"encoder.scheduler.total_steps={total!r} (trainer.max_steps); the schedule needs "
                "a number of steps >= 1: set trainer.max_steps, or encoder.scheduler=null"
            )
        pct = scheduler.get("pct_start")
        if pct is not None and not (isinstance(pct, int | float) and 0 <= pct < 1):
            problems.append(f"encoder.scheduler.pct_start={pct!r}; expected a fraction in [0, 1)")
        max_lr = scheduler.get("max_lr")
        if max_lr is not None and not (
            isinstance(max_lr, int | float) and math.isfinite(max_lr) and max_lr > 0
        ):
            problems.append(f"encoder.scheduler.max_lr={max_lr!r}; expected a finite number > 0")
    if every_n_train_steps is not None and (
        not integer(every_n_train_steps) or every_n_train_steps < 1
    ):
        problems.append(
            f"callbacks.checkpoint.every_n_train_steps={every_n_train_steps!r}; expected an "
            "integer >= 1"
        )
    if problems:
        raise BlissConfigError("invalid training settings: " + "; ".join(problems) + ".")


def check_enough_images(n_images: int, batch_size: int, world_size: int, where: str | Path) -> None:
    """Refuse a training split that gives no full batch (Lightning would train nothing, exit 0).

    Args:
        n_images: images in the training split.
        batch_size: ``data.batch_size``.
        world_size: processes sharing the images (devices x nodes).
        where: the data, for the message.
    """
    per_rank = n_images // max(1, world_size)
    if per_rank < batch_size:
        ranks = f" shared by {world_size} processes ({per_rank} each)" if world_size > 1 else ""
        raise BlissConfigError(
            f"the training split of {where} has {n_images} images{ranks}, fewer than one batch "
            f"of data.batch_size={batch_size}: no training step could run. Generate more images "
            "(generate.n_shards, generate.images_per_shard) or lower data.batch_size."
        )


def check_shards_fit(
    manifest: Mapping[str, Any],
    bands: Sequence[str],
    tile_slen: int,
    cached_data: str | Path,
    recipe: Mapping[str, Any] | None = None,
) -> None:
    """Raise if cached shards were made for another config than the one being trained.

    Args:
        manifest: the shards' ``manifest.json`` (its ``config`` records the generation).
        bands: the encoder's bands (``survey.bands``).
        tile_slen: the tile side, pixels (``prior.tile_slen``).
        cached_data: the shard directory, for the message.
        recipe: this run's ``survey``, ``prior`` and ``simulator`` sections, resolved; every key
            they share with the manifest's record must agree (where a shard was rendered, e.g.
            ``simulator.renderer.device``, may differ) [default: bands and tiles only].

    Raises:
        BlissConfigError: naming each differing key with both values.
    """
    saved_recipe = manifest.get("config", {})
    saved = saved_recipe.get("survey", {}).get("bands")
    if saved is not None and list(saved) != list(bands):
        raise BlissConfigError(
            f"shards in {cached_data} have bands {saved} but the encoder is built for "
            f"survey.bands={list(bands)}; generate shards for this survey or change survey."
        )
    images = saved_recipe.get("simulator", {}).get("image_size")
    if images is not None and images % tile_slen:
        raise BlissConfigError(f"shard images of {images} px are not whole {tile_slen}-px tiles.")
    if recipe is None:
        return
    differences = [
        difference
        for difference in config_differences(
            {k: v for k, v in saved_recipe.items() if k in recipe}, recipe
        )
        if difference[0].rsplit(".", 1)[-1] not in _NOT_RECIPE
    ]
    if differences:
        raise BlissConfigError(
            f"the shards in {cached_data} were generated with another config than this training "
            f"run's: {_listing(differences, 'shards', 'now')}. Train with the overrides they were "
            "generated with, or generate shards for this config into another "
            "paths.cached_data (the default path names the survey and image size only)."
        )


def check_resumable(
    saved_encoder: Mapping[str, Any], encoder: Mapping[str, Any], path: str | Path
) -> None:
    """Refuse to resume a checkpoint whose encoder config differs where resuming cannot follow.

    Lightning restores the optimizer's state, learning rates included, and the schedule's
    progress from the checkpoint, so a changed ``encoder.optimizer`` or ``encoder.scheduler`` key
    would be ignored while the new checkpoints recorded it as used; a changed architecture
    would not load. Only the schedule's length (``trainer.max_steps``) and inference or speed
    settings may change.

    Args:
        saved_encoder: the ``encoder`` section recorded in the checkpoint.
        encoder: this run's ``encoder`` section, resolved.
        path: the checkpoint, for the message.

    Raises:
        BlissConfigError: naming each differing key with both values.
    """
    differences = [d for d in config_differences(saved_encoder, encoder) if d[0] not in _RESUMABLE]
    if differences:
        keys = _listing([(f"encoder.{k}", a, b) for k, a, b in differences], "checkpoint", "now")
        raise BlissConfigError(
            f"cannot resume {path}: {keys}. Resuming continues the checkpoint's optimizer state "
            "and schedule, which these keys would not reach. Set them back to continue, or "
            f"start a new run from its weights with train.init_weights={path} train.resume=null."
        )
