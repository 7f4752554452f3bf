"""CachedSimulatedDataModule splits and the ShardBlockSampler."""

import json

import pytest
import torch

from bliss.data.cached import SPLITS_NAME, CachedSimulatedDataModule, ShardDataset
from bliss.data.samplers import ShardBlockSampler
from bliss.data.shards import shard_path
from bliss.errors import BlissConfigError, BlissIOError, BlissValueError
from tests.unit.data.conftest import make_shards

FRACTIONS = {"val": 0.2, "test": 0.2}


def _setup(directory, **kwargs) -> CachedSimulatedDataModule:
    module = CachedSimulatedDataModule(
        str(directory), batch_size=2, split_fractions=FRACTIONS, **kwargs
    )
    module.setup("fit")
    return module


def _names(module, split):
    return [path.name for path in module.datasets[split].files]


def test_splits_are_disjoint_recorded_and_stable_when_shards_are_added(simulator, tmp_path):
    make_shards(simulator, tmp_path, n_shards=10, images_per_shard=1)
    module = _setup(tmp_path)
    splits = {split: _names(module, split) for split in ("train", "val", "test")}

    # ceil(0.2 * 10) = 2 shards each for val and test
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    every = [name for names in splits.values() for name in names]
    assert sorted(every) == sorted(p.name for p in tmp_path.glob("shard_*.pt"))
    assert len(set(every)) == len(every)
    assert json.loads((tmp_path / SPLITS_NAME).read_text()) == splits

    make_shards(simulator, tmp_path, n_shards=3, images_per_shard=1, shard_offset=10)
    grown = _setup(tmp_path)

    new = [shard_path(tmp_path, i).name for i in (10, 11, 12)]
    assert _names(grown, "val") == splits["val"]
    assert _names(grown, "test") == splits["test"]
    assert _names(grown, "train") == splits["train"] + new
    assert len(grown.datasets["train"]) == 9


def test_train_loader_yields_batches_of_the_shard_contents(simulator, tmp_path):
    make_shards(simulator, tmp_path, n_shards=5, images_per_shard=2)
    module = _setup(tmp_path, augment=True)

    batches = list(module.train_dataloader())

    assert len(batches) == 3  # 3 train shards x 2 images, batch 2
    batch = batches[0]
    assert batch["images"].shape == (2, 1, 8, 8)
    assert batch["catalog/locs"].shape == (2, 2, 2, 1, 2)
    assert batch["catalog/n_sources"].shape == (2, 2, 2)
    # augmentation moves images and catalogs but keeps their contents
    seen = torch.cat([b["images"] for b in batches]).flatten(1).sort(1).values
    stored = (
        torch.cat(
            [torch.load(p, weights_only=True)["images"] for p in module.datasets["train"].files]
        )
        .flatten(1)
        .sort(1)
        .values
    )
    assert torch.equal(seen.sort(0).values, stored.sort(0).values)


def test_too_few_shards_for_the_splits_is_a_config_error(simulator, tmp_path):
    make_shards(simulator, tmp_path, n_shards=2, images_per_shard=1)
    with pytest.raises(BlissConfigError, match="generate.n_shards"):
        _setup(tmp_path)


def test_a_missing_directory_is_an_io_error(tmp_path):
    with pytest.raises(BlissIOError, match="bliss mode=generate"):
        _setup(tmp_path / "nothing_here")


def test_a_shard_with_fewer_images_than_the_manifest_is_an_io_error(simulator, tmp_path):
    make_shards(simulator, tmp_path, n_shards=1, images_per_shard=2)
    dataset = ShardDataset([shard_path(tmp_path, 0)], [3])
    with pytest.raises(BlissIOError, match="shard_000000.pt"):
        dataset[0]


SIZES = [3, 4, 5, 2, 7]  # 21 images


def _indices(epoch=0, **kwargs):
    sampler = ShardBlockSampler(SIZES, **kwargs)
    sampler.set_epoch(epoch)
    return list(sampler), len(sampler)


def test_two_replicas_get_disjoint_halves():
    for epoch in (0, 1):
        rank0, len0 = _indices(epoch, seed=3, num_replicas=2, rank=0)
        rank1, len1 = _indices(epoch, seed=3, num_replicas=2, rank=1)
        assert len0 == len1 == sum(SIZES) // 2 == len(rank0) == len(rank1)
        assert set(rank0).isdisjoint(rank1)
        assert len(set(rank0)) == len(rank0)
        assert set(rank0) | set(rank1) <= set(range(sum(SIZES)))


def test_set_epoch_reshuffles_deterministically():
    first, _ = _indices(0, seed=3)
    again, _ = _indices(0, seed=3)
    second, _ = _indices(1, seed=3)
    assert first == again
    assert first != second
    assert sorted(first) == sorted(second) == list(range(sum(SIZES)))
    ordered, _ = _indices(0, shuffle=False)
    assert ordered == list(range(sum(SIZES)))


def test_shuffled_order_visits_one_shard_at_a_time():
    order, _ = _indices(2, seed=0)
    starts = [sum(SIZES[:i]) for i in range(len(SIZES))]
    shard_of = [max(i for i, s in enumerate(starts) if s <= index) for index in order]
    changes = sum(a != b for a, b in zip(shard_of, shard_of[1:], strict=False))
    assert changes == len(SIZES) - 1


def test_bad_rank_is_a_value_error():
    with pytest.raises(BlissValueError, match="rank=2"):
        ShardBlockSampler(SIZES, num_replicas=2, rank=2)


@pytest.mark.parametrize(
    ("setting", "device", "pinned"),
    [("auto", "cpu", False), ("auto", "cuda", True), (False, "cuda", False), (True, "cpu", True)],
)
def test_pin_memory_auto_follows_the_trainer_device(simulator, tmp_path, setting, device, pinned):
    from types import SimpleNamespace

    make_shards(simulator, tmp_path, n_shards=5, images_per_shard=1)
    module = _setup(tmp_path, pin_memory=setting)
    module.trainer = SimpleNamespace(  # only what the loaders read
        world_size=1, global_rank=0, strategy=SimpleNamespace(root_device=torch.device(device))
    )
    assert module.train_dataloader().pin_memory is pinned


def test_bad_pin_memory_is_named(tmp_path):
    with pytest.raises(BlissConfigError, match="data.pin_memory='yes'"):
        CachedSimulatedDataModule(str(tmp_path), pin_memory="yes")
