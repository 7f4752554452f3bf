"""How a catalog travels in a flat batch dict: its tensors under ``catalog/<key>``.

Shards, on-the-fly batches, augmentations and the encoder's training step all use this one
prefix, so a batch is a plain ``dict[str, Tensor]`` that Lightning and ``torch.save`` handle.
"""

from collections.abc import Mapping
from typing import TypeVar

__all__ = [
    "CATALOG_PREFIX",
    "FIELD_PREFIX",
    "catalog_key",
    "field_key",
    "flatten_catalog",
    "unflatten_catalog",
]

#: prefix of the catalog's tensors in a batch
CATALOG_PREFIX = "catalog/"
#: prefix of the truth of region quantities (a shear per image, a convergence map): ``b hr wr d``
FIELD_PREFIX = "fields/"

Value = TypeVar("Value")


def catalog_key(key: str) -> str:
    """The batch key of catalog key ``key``: ``fluxes`` -> ``catalog/fluxes``."""
    return CATALOG_PREFIX + key


def field_key(key: str) -> str:
    """The batch key of region quantity ``key``: ``shear`` -> ``fields/shear``."""
    return FIELD_PREFIX + key


def flatten_catalog(catalog: Mapping[str, Value]) -> dict[str, Value]:
    """``{key: value}`` -> ``{catalog/key: value}``."""
    return {CATALOG_PREFIX + key: value for key, value in catalog.items()}


def unflatten_catalog(batch: Mapping[str, Value]) -> dict[str, Value]:
    """The catalog entries of a batch, without the prefix: ``{catalog/key: v}`` -> ``{key: v}``."""
    n = len(CATALOG_PREFIX)
    return {key[n:]: value for key, value in batch.items() if str(key).startswith(CATALOG_PREFIX)}
