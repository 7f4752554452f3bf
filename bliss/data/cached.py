"""The DataModule that streams cached shards with train / val / test splits."""

import bisect
import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from bliss.data.integrity import verify_shards
from bliss.data.samplers import ShardBlockSampler
from bliss.data.shards import load_shard, read_manifest
from bliss.data.transforms import DEFAULT_ORIENTED_KEYS, Orientation, flip_cols, rotate90
from bliss.errors import BlissConfigError, BlissIOError

__all__ = ["SPLITS_NAME", "CachedSimulatedDataModule", "ShardDataset", "assign_splits"]

SPLITS_NAME = "splits.json"
_SPLITS = ("train", "val", "test")
_VERIFY = ("checksums", "sizes")


class ShardDataset(Dataset):
    """Images of a list of shards, loaded lazily with a small per-process cache.

    Items are dicts: ``images`` (``c h w``), ``background`` (``c``), ``psf_fwhm_arcsec`` (``c``) and
    ``catalog/<key>`` (``ht wt m d``; ``catalog/n_sources`` is ``ht wt``).

    Args:
        files: shard files.
        sizes: images in each shard (from the manifest).
        augment: apply a random rotation by a multiple of 90 degrees and a random flip.
        cache_shards: shards kept in memory per process [default: 2].
        oriented_keys: catalog keys that turn with the image (see :mod:`bliss.data.transforms`).
        records: each shard's manifest entry; its size and CRC-32 are checked when the shard is
            loaded [default: none, no check].
    """

    def __init__(
        self,
        files: list[Path],
        sizes: list[int],
        augment: bool = False,
        cache_shards: int = 2,
        oriented_keys: Mapping[str, str] | None = None,
        records: list[Mapping[str, Any]] | None = None,
    ) -> None:
        self.files = [Path(f) for f in files]
        self.sizes = list(sizes)
        self.records = list(records) if records is not None else None
        self.starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.augment = augment
        self.cache_shards = cache_shards
        keys = DEFAULT_ORIENTED_KEYS if oriented_keys is None else oriented_keys
        self.oriented_keys = {k: Orientation(v) for k, v in keys.items()}
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        """Total number of images."""
        return sum(self.sizes)

    def _shard(self, shard: int) -> dict[str, Any]:
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        payload = load_shard(
            self.files[shard], dict(self.records[shard]) if self.records is not None else None
        )
        n_images = payload["images"].shape[0]
        if n_images != self.sizes[shard]:
            raise BlissIOError(
                f"{self.files[shard]} holds {n_images} images but the manifest says "
                f"{self.sizes[shard]}; the shard was overwritten, re-run `bliss mode=generate`."
            )
        self._cache[shard] = payload
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return payload

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """One example."""
        shard = bisect.bisect_right(self.starts, index) - 1
        payload = self._shard(shard)
        local = index - self.starts[shard]
        item = {key: value[local] for key, value in payload.items() if isinstance(value, Tensor)}
        if self.augment:
            for _ in range(int(torch.randint(4, ()))):
                item = rotate90(item, self.oriented_keys)
            if bool(torch.randint(2, ())):
                item = flip_cols(item, self.oriented_keys)
        return item


def assign_splits(
    directory: Path, shard_files: list[str], fractions: Mapping[str, float]
) -> dict[str, list[str]]:
    """Assign shards to train / val / test once and record the assignment in ``splits.json``.

    The first call takes the last shards (by index) for test and the ones before them for val;
    later calls keep every recorded assignment and put new shards in train, so a shard used for
    training never moves to val or test.
    """
    path = Path(directory) / SPLITS_NAME
    if set(fractions) != {"val", "test"} or not all(0 <= v < 1 for v in fractions.values()):
        raise BlissConfigError(
            f"data.split_fractions={dict(fractions)}; expected {{val: f, test: f}} with 0 <= f < 1."
        )
    if path.exists():
        splits = json.loads(path.read_text())
        known = {f for names in splits.values() for f in names}
        splits["train"] += [f for f in shard_files if f not in known]
    else:
        n_total = len(shard_files)
        n_test = math.ceil(fractions["test"] * n_total) if fractions["test"] else 0
        n_val = math.ceil(fractions["val"] * n_total) if fractions["val"] else 0
        if n_total - n_test - n_val < 1:
            raise BlissConfigError(
                f"{directory} has {n_total} shards, too few for a train split after {n_val} val "
                f"and {n_test} test shards; generate more shards (generate.n_shards)."
            )
        ordered = sorted(shard_files)
        splits = {
            "train": ordered[: n_total - n_test - n_val],
            "val": ordered[n_total - n_test - n_val : n_total - n_test],
            "test": ordered[n_total - n_test :],
        }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(splits, indent=1))
    tmp.replace(path)
    return splits


class CachedSimulatedDataModule(pl.LightningDataModule):
    """Stream shards written by ``bliss mode=generate``.

    Args:
        cached_data: the shard directory.
        batch_size: images per batch.
        num_workers: loader processes.
        split_fractions: ``{val, test}`` fractions of the shards (rounded up).
        augment: rotate / flip training examples.
        seed: base seed of the shuffles.
        pin_memory: pin batches in page-locked memory, so the copy to the GPU runs
            asynchronously; ``"auto"``: when the trainer runs on CUDA.
        oriented_keys: catalog keys that turn with the image.
        verify: the pre-flight pass of :meth:`setup` over every shard of the three splits:
            ``checksums`` (size and CRC-32: reads every byte, ~2 GB/s) or ``sizes``. Each shard's
            checksum is checked again whenever it is loaded.
    """

    def __init__(
        self,
        cached_data: str,
        batch_size: int = 32,
        num_workers: int = 0,
        split_fractions: Mapping[str, float] | None = None,
        augment: bool = True,
        seed: int = 0,
        pin_memory: bool | str = "auto",
        oriented_keys: Mapping[str, str] | None = None,
        verify: str = "checksums",
    ) -> None:
        super().__init__()
        self.directory = Path(cached_data)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_fractions = dict(split_fractions or {"val": 0.1, "test": 0.1})
        self.augment = augment
        self.seed = seed
        if pin_memory not in (True, False, "auto"):
            raise BlissConfigError(f"data.pin_memory={pin_memory!r}; expected true, false or auto.")
        self.pin_memory = pin_memory
        self.oriented_keys = oriented_keys
        if verify not in _VERIFY:
            raise BlissConfigError(f"data.verify={verify!r}; expected one of {list(_VERIFY)}.")
        self.verify = verify
        self.datasets: dict[str, ShardDataset] = {}
        self.manifest: dict[str, Any] = {}
        #: what the pre-flight pass checked (see :func:`bliss.data.integrity.verify_shards`)
        self.verification: dict[str, Any] = {}

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest, check every shard it lists, build the three split datasets.

        Raises:
            BlissIOError: no manifest, or a shard is missing or damaged (all are listed).
        """
        if self.datasets:
            return
        self.manifest = read_manifest(self.directory)
        records = {s["file"]: s for s in self.manifest["shards"]}
        splits = assign_splits(self.directory, list(records), self.split_fractions)
        used = [records[f] for split in _SPLITS for f in splits[split] if f in records]
        self.verification = verify_shards(self.directory, used, self.verify == "checksums")
        for split in _SPLITS:
            files = [f for f in splits[split] if f in records]
            self.datasets[split] = ShardDataset(
                [self.directory / f for f in files],
                [records[f]["n_images"] for f in files],
                augment=self.augment and split == "train",
                oriented_keys=self.oriented_keys,
                records=[records[f] for f in files],
            )

    def _loader(self, split: str) -> DataLoader:
        dataset = self.datasets[split]
        world, rank, on_cuda = 1, 0, False
        if self.trainer is not None:
            world, rank = self.trainer.world_size, self.trainer.global_rank
            on_cuda = self.trainer.strategy.root_device.type == "cuda"
        sampler = ShardBlockSampler(
            dataset.sizes, shuffle=split == "train", seed=self.seed, num_replicas=world, rank=rank
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=on_cuda if self.pin_memory == "auto" else self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=split == "train",
        )

    def train_dataloader(self) -> DataLoader:
        """Training batches (augmented, shuffled)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches."""
        return self._loader("test")
