"""The encoder: a CNN over tiles and a checkerboard of posterior heads, and its checkpoints."""

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
from bliss.encoder.training import fit

__all__ = [
    "Encoder",
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
