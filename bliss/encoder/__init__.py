"""The encoder: a CNN over tiles and a checkerboard of posterior heads, and its checkpoints.

``EncoderModule`` and ``fit`` need Lightning, which takes seconds to import; they are loaded
on first use, so inference (``Encoder``, ``load_encoder``) starts without it.
"""

import importlib
from typing import Any

from bliss.encoder.checkerboard import SCHEDULES, TilingSchedule
from bliss.encoder.checkpoint import (
    checkpoint_hash,
    export_checkpoint,
    load_encoder,
    read_checkpoint,
    verify_checkpoint_file,
)
from bliss.encoder.encoder import Encoder, catalog_from_batch
from bliss.encoder.features import FeatureNet
from bliss.encoder.normalizers import ImageNormalizer

__all__ = [
    "Encoder",
    "EncoderModule",
    "FeatureNet",
    "ImageNormalizer",
    "SCHEDULES",
    "TilingSchedule",
    "catalog_from_batch",
    "checkpoint_hash",
    "export_checkpoint",
    "fit",
    "load_encoder",
    "read_checkpoint",
    "verify_checkpoint_file",
]

#: names imported on first use, and their modules
_LAZY = {"EncoderModule": "bliss.encoder.module", "fit": "bliss.encoder.training"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bliss.encoder' has no attribute {name!r}")
