"""One helper to check tensor shapes at public boundaries.

Patterns use the bliss dimension alphabet: images ``b c h w``, tile catalogs ``b ht wt m d``,
full catalogs ``b n d``, network maps ``b f ht wt``, posterior parameters ``b ht wt p``.
"""

from collections.abc import Mapping

from torch import Tensor

from bliss.errors import BlissShapeError

__all__ = ["check_shape"]


def check_shape(
    name: str, tensor: Tensor, pattern: str, known: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Check that ``tensor`` matches an einops-style ``pattern`` and return the sizes it binds.

    Args:
        name: what the tensor is called in the caller's API (used in the error message).
        tensor: the tensor to check.
        pattern: space separated dimension names, e.g. ``"b ht wt m 2"``; integers are fixed sizes.
        known: sizes already fixed for some names (e.g. ``{"c": 5}``); they must agree.

    Returns:
        The sizes of every named dimension, merged with ``known``.

    Raises:
        BlissShapeError: the rank or a size differs from the pattern.

    Example:
        >>> import torch
        >>> check_shape("image", torch.zeros(2, 5, 8, 8), "b c h w", {"c": 5})["h"]
        8
    """
    sizes = dict(known or {})
    dims = pattern.split()
    if tensor.ndim != len(dims):
        raise BlissShapeError(
            f"{name} has shape {tuple(tensor.shape)} ({tensor.ndim} dims), expected `{pattern}` "
            f"({len(dims)} dims); check which tensor was passed or add/remove a dimension."
        )
    for dim, size in zip(dims, tensor.shape, strict=True):
        expected = int(dim) if dim.isdigit() else sizes.get(dim)
        if expected is not None and expected != size:
            raise BlissShapeError(
                f"{name} has shape {tuple(tensor.shape)}, expected `{pattern}` with {dim}={expected} "
                f"(got {dim}={size}); make the inputs agree on `{dim}`."
            )
        if not dim.isdigit():
            sizes[dim] = size
    return sizes
