"""Checks before training: settings, the shards' recipe, a resumed checkpoint; the schedule fix."""

import functools
import math

import pytest
import torch

from bliss.encoder.preflight import (
    check_enough_images,
    check_resumable,
    check_shards_fit,
    check_training_settings,
    config_differences,
)
from bliss.encoder.schedules import build_scheduler
from bliss.errors import BlissConfigError, BlissWarning

SETTINGS = {
    "batch_size": 16,
    "max_steps": 100,
    "max_epochs": -1,
    "optimizer": {"lr": 2e-3, "weight_decay": 1e-4},
    "scheduler": {"total_steps": 100, "pct_start": 0.05, "max_lr": 2e-3},
    "every_n_train_steps": 200,
}


def test_valid_settings_pass() -> None:
    check_training_settings(**SETTINGS)
    check_training_settings(**{**SETTINGS, "max_steps": -1, "max_epochs": 3, "scheduler": None})


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"batch_size": -4}, "data.batch_size=-4"),
        ({"batch_size": 2.5}, "data.batch_size=2.5"),
        ({"max_steps": 0}, "trainer.max_steps=0"),
        ({"max_steps": -1}, "trainer.max_steps=-1"),  # with max_epochs=-1: never ends
        ({"optimizer": {"lr": float("nan")}}, "encoder.optimizer.lr=nan"),
        ({"optimizer": {"lr": 0.0}}, "encoder.optimizer.lr=0.0"),
        ({"optimizer": {"lr": 1e-3, "weight_decay": -1}}, "encoder.optimizer.weight_decay=-1"),
        ({"scheduler": {"total_steps": -1}}, "encoder.scheduler.total_steps=-1"),
        ({"scheduler": {"pct_start": 1.0}}, "encoder.scheduler.pct_start=1.0"),
        ({"every_n_train_steps": 0}, "callbacks.checkpoint.every_n_train_steps=0"),
    ],
)
def test_each_invalid_setting_is_named(change: dict, named: str) -> None:
    with pytest.raises(BlissConfigError, match="invalid training settings") as info:
        check_training_settings(**{**SETTINGS, **change})
    assert named in str(info.value)


def test_all_invalid_settings_are_named_at_once() -> None:
    with pytest.raises(BlissConfigError) as info:
        check_training_settings(**{**SETTINGS, "batch_size": 0, "max_steps": 0})
    assert "data.batch_size=0" in str(info.value) and "trainer.max_steps=0" in str(info.value)


def test_fewer_images_than_a_batch_per_process() -> None:
    check_enough_images(8, 8, 1, "shards/")
    with pytest.raises(BlissConfigError, match="7 images, fewer than one batch"):
        check_enough_images(7, 8, 1, "shards/")
    with pytest.raises(BlissConfigError, match=r"shared by 2 processes \(4 each\)"):
        check_enough_images(8, 8, 2, "shards/")


def test_config_differences_are_dotted_and_ignore_new_keys() -> None:
    old = {"a": {"b": 1, "c": [1, 2]}, "d": "x", "only_old": 1}
    new = {"a": {"b": 2, "c": (1, 2)}, "d": "x", "only_new": 1}
    assert config_differences(old, new) == [("a.b", 1, 2)]


RECIPE = {
    "survey": {"bands": ["r"], "name": "toy"},
    "prior": {"density_per_arcmin2": 4.2, "tile_slen": 4},
    "simulator": {"image_size": 16, "renderer": {"device": None, "min_stamp_px": 15}},
}


def _manifest(**prior: float) -> dict:
    config = {**RECIPE, "prior": {**RECIPE["prior"], **prior}}
    return {"config": config}


def test_shards_of_another_recipe_are_refused_with_each_key() -> None:
    check_shards_fit(_manifest(), ["r"], 4, "shards/", recipe=RECIPE)
    where = {**RECIPE, "simulator": {**RECIPE["simulator"], "renderer": {"device": "cuda"}}}
    check_shards_fit(_manifest(), ["r"], 4, "shards/", recipe=where)  # where, not what
    with pytest.raises(BlissConfigError) as info:
        check_shards_fit(_manifest(density_per_arcmin2=60.0), ["r"], 4, "shards/", recipe=RECIPE)
    assert "prior.density_per_arcmin2 (shards 60.0, now 4.2)" in str(info.value)
    with pytest.raises(BlissConfigError, match="bands"):
        check_shards_fit(_manifest(), ["g"], 4, "shards/", recipe=RECIPE)


ENCODER = {
    "bands": ["r"],
    "threshold": 0.5,
    "features": {"width": 16, "checkpoint_stem": False},
    "optimizer": {"lr": 2e-3, "weight_decay": 1e-4},
    "scheduler": {"total_steps": 100, "pct_start": 0.05, "max_lr": 2e-3},
}


def test_resuming_allows_the_schedule_length_and_inference_settings() -> None:
    changed = {
        **ENCODER,
        "threshold": 0.7,
        "features": {"width": 16, "checkpoint_stem": True},
        "scheduler": {**ENCODER["scheduler"], "total_steps": 400},
    }
    check_resumable(ENCODER, changed, "last.ckpt")


def test_resuming_refuses_optimizer_and_architecture_changes() -> None:
    changed = {
        **ENCODER,
        "features": {"width": 32, "checkpoint_stem": False},
        "optimizer": {"lr": 1e-4, "weight_decay": 1e-4},
        "scheduler": {**ENCODER["scheduler"], "max_lr": 1e-4},
    }
    with pytest.raises(BlissConfigError) as info:
        check_resumable(ENCODER, changed, "last.ckpt")
    message = str(info.value)
    for key in ("encoder.optimizer.lr", "encoder.scheduler.max_lr", "encoder.features.width"):
        assert key in message
    assert "train.init_weights=last.ckpt train.resume=null" in message


def _one_cycle(total_steps: int, pct_start: float = 0.05) -> tuple[object, list[float]]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    factory = functools.partial(
        torch.optim.lr_scheduler.OneCycleLR,
        max_lr=1e-3,
        total_steps=total_steps,
        pct_start=pct_start,
    )
    return factory, optimizer


def test_a_one_step_warm_up_gets_two_steps() -> None:
    factory, optimizer = _one_cycle(20)
    with pytest.raises(ZeroDivisionError):
        factory(optimizer)  # what torch does
    with pytest.warns(BlissWarning, match="pct_start=0.1 \\(2 steps\\)"):
        scheduler = build_scheduler(factory, optimizer)
    rates = []
    for _ in range(20):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    assert all(math.isfinite(rate) for rate in rates)


def test_other_lengths_are_built_as_configured() -> None:
    factory, optimizer = _one_cycle(2)
    scheduler = build_scheduler(factory, optimizer)
    assert scheduler.total_steps == 2
