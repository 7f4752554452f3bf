"""Exceptions and warnings raised by bliss.

Which error when:

* ``BlissValueError`` -- a value is out of its allowed range or of the wrong kind (a negative
  density, an unknown factor name, a band list that does not match the survey).
* ``BlissShapeError`` -- a tensor does not have the shape a function documents (see
  :func:`bliss.catalog.shapes.check_shape`).
* ``BlissConfigError`` -- a composed Hydra config is inconsistent or misses a key; raised at
  start-up, before any work is done.
* ``BlissIOError`` -- a file cannot be read or written, or its content is not what bliss wrote
  (a truncated shard, a FITS file without the expected HDU).
* ``BlissWarning`` -- something is suspicious but the result is still usable (no detections,
  no WCS so no RA/Dec columns).

Every message says what was received, what was expected and how to fix it.
"""

__all__ = [
    "BlissConfigError",
    "BlissError",
    "BlissIOError",
    "BlissShapeError",
    "BlissValueError",
    "BlissWarning",
]


class BlissError(RuntimeError):
    """Base class of every error raised on purpose by bliss."""


class BlissValueError(BlissError, ValueError):
    """A value is outside its allowed range or set."""


class BlissShapeError(BlissError, ValueError):
    """A tensor does not have the documented shape."""


class BlissConfigError(BlissError, ValueError):
    """A configuration is inconsistent, incomplete or names something that does not exist."""


class BlissIOError(BlissError, OSError):
    """A file is missing, unreadable, or does not hold what bliss expects."""


class BlissWarning(UserWarning):
    """A result is usable but suspicious (for example, empty)."""
