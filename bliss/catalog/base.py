"""The mapping interface shared by tile and full catalogs."""

from collections.abc import Iterator

from torch import Tensor

__all__ = ["CatalogMapping"]


class CatalogMapping:
    """Read-only dict-like access to a catalog's tensors (stored in ``self._data``)."""

    _data: dict[str, Tensor]

    def __getitem__(self, key: str) -> Tensor:
        """Return the tensor stored under ``key``."""
        return self._data[key]

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        """Iterate over keys."""
        return iter(self._data)

    def keys(self) -> list[str]:
        """The stored keys."""
        return list(self._data)

    def items(self) -> list[tuple[str, Tensor]]:
        """The stored ``(key, tensor)`` pairs."""
        return list(self._data.items())
