"""Generation split over array tasks (shard offsets), then merged into one manifest."""

import json

import pytest

from bliss.cli.main import run
from bliss.data.cached import SPLITS_NAME
from bliss.data.merge import merge_task_manifests
from bliss.data.shards import MANIFEST_NAME, read_manifest, shard_path, task_manifest_path
from bliss.errors import BlissConfigError, BlissIOError
from tests.conftest import TINY_OVERRIDES, compose_config
from tests.unit.data.conftest import make_shards

FRACTIONS = {"val": 0.25, "test": 0.25}


def _two_tasks(simulator, directory, **kwargs) -> None:
    """Shards 0-1 and 2-3 of a 4-shard generation, as two array tasks write them."""
    for offset in (0, 2):
        make_shards(simulator, directory, n_shards=2, shard_offset=offset, total_shards=4, **kwargs)


def test_two_tasks_and_a_merge_equal_one_run(simulator, tmp_path):
    single = make_shards(simulator, tmp_path / "single", n_shards=4)
    _two_tasks(simulator, tmp_path / "array")
    # tasks write only their own manifest: a half-written generation is never readable
    assert not (tmp_path / "array" / MANIFEST_NAME).exists()
    task = json.loads(task_manifest_path(tmp_path / "array", 2, 3).read_text())
    assert [s["index"] for s in task["shards"]] == [2, 3] and task["total_shards"] == 4

    merged = merge_task_manifests(tmp_path / "array", split_fractions=FRACTIONS)

    assert merged == single == read_manifest(tmp_path / "array")
    splits = json.loads((tmp_path / "array" / SPLITS_NAME).read_text())
    assert sorted(f for names in splits.values() for f in names) == [
        s["file"] for s in single["shards"]
    ]


def test_merge_names_a_shard_range_no_task_wrote(simulator, tmp_path):
    make_shards(simulator, tmp_path, n_shards=2, shard_offset=0, total_shards=4)

    with pytest.raises(BlissIOError, match="no task wrote shards 2-3"):
        merge_task_manifests(tmp_path, split_fractions=FRACTIONS)
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_merge_names_a_deleted_shard(simulator, tmp_path):
    _two_tasks(simulator, tmp_path)
    shard_path(tmp_path, 1).unlink()

    with pytest.raises(BlissIOError, match="shard_000001.pt"):
        merge_task_manifests(tmp_path, split_fractions=FRACTIONS)
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_merge_refuses_tasks_with_different_fingerprints(simulator, tmp_path):
    make_shards(simulator, tmp_path, n_shards=2, shard_offset=0, total_shards=4, seed=0)
    make_shards(simulator, tmp_path, n_shards=2, shard_offset=2, total_shards=4, seed=1)

    with pytest.raises(BlissConfigError, match="different simulator configs") as info:
        merge_task_manifests(tmp_path, split_fractions=FRACTIONS)
    assert "shards_000000-000001.json" in str(info.value)
    assert "shards_000002-000003.json" in str(info.value)


def test_merge_refuses_another_total(simulator, tmp_path):
    _two_tasks(simulator, tmp_path)
    with pytest.raises(BlissConfigError, match="total_shards=6"):
        merge_task_manifests(tmp_path, split_fractions=FRACTIONS, total_shards=6)


def test_a_task_range_past_the_total_is_refused(simulator, tmp_path):
    with pytest.raises(BlissConfigError, match="total_shards=4"):
        make_shards(simulator, tmp_path, n_shards=3, shard_offset=2, total_shards=4)


def test_merge_without_task_manifests_says_what_to_run(tmp_path):
    with pytest.raises(BlissIOError, match="run the array tasks first"):
        merge_task_manifests(tmp_path, split_fractions=FRACTIONS)


def test_cli_keys_run_tasks_then_merge(tmp_path):
    task = ["mode=generate", *TINY_OVERRIDES, "generate.n_shards=1", "generate.total_shards=2"]
    for offset in (0, 1):
        run(compose_config([*task, f"generate.shard_offset={offset}"], tmp_path))

    manifest = run(
        compose_config(
            [
                "mode=generate",
                *TINY_OVERRIDES,
                "generate.merge_only=true",
                "data.split_fractions={val: 0.5, test: 0.0}",
            ],
            tmp_path,
        )
    )

    assert manifest["n_shards"] == 2 and manifest["n_images"] == 4
    splits = json.loads((tmp_path / "data" / "cached" / "sdss_16px" / SPLITS_NAME).read_text())
    assert [len(splits[s]) for s in ("train", "val", "test")] == [1, 1, 0]
