"""Shards of simulated data, the DataModules that stream them, and their augmentations.

Names are imported on first use: reading shards needs neither the simulator nor GalSim.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bliss.data.cached import CachedSimulatedDataModule, ShardDataset
    from bliss.data.generate import generate_shards
    from bliss.data.integrity import verify_shards
    from bliss.data.merge import merge_task_manifests
    from bliss.data.on_the_fly import SimulatedDataModule
    from bliss.data.shards import load_shard, read_manifest, save_shard
    from bliss.data.transforms import flip_cols, rotate90

#: public name -> its module, imported on first use (importing the package stays cheap)
_EXPORTS = {
    "CachedSimulatedDataModule": "bliss.data.cached",
    "ShardDataset": "bliss.data.cached",
    "SimulatedDataModule": "bliss.data.on_the_fly",
    "flip_cols": "bliss.data.transforms",
    "generate_shards": "bliss.data.generate",
    "load_shard": "bliss.data.shards",
    "merge_task_manifests": "bliss.data.merge",
    "read_manifest": "bliss.data.shards",
    "rotate90": "bliss.data.transforms",
    "save_shard": "bliss.data.shards",
    "verify_shards": "bliss.data.integrity",
}
__all__ = [
    "CachedSimulatedDataModule",
    "ShardDataset",
    "SimulatedDataModule",
    "flip_cols",
    "generate_shards",
    "load_shard",
    "merge_task_manifests",
    "read_manifest",
    "rotate90",
    "save_shard",
    "verify_shards",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
